"""Run on 2 processes (gloo, CPU) by tests/distributed_jobs.py for test_image_text_losses.py.

Each rank embeds half of an image-text batch with a two-tower model (both towers trained) and computes a loss with
``gather_across_devices``; the loss and the gradients averaged over the ranks must equal one process on the whole
batch. The GradCache losses run under ``DistributedDataParallel`` as the trainer wraps the model
(``find_unused_parameters=True``), which averages their gradients; the uncached losses embed the two towers in two
forward passes before one backward, which DDP cannot reduce, so their gradients are all-reduced by hand (what data
parallelism computes). Rank 0 writes the differences (gradients relative to the largest one) to ``report.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.distributed as dist
from image_text_helpers import image_text_columns, random_images, tiny_two_tower
from loss_helpers import gradients
from sentence_transformers.base.losses import CachedLossMixin
from torch.nn.parallel import DistributedDataParallel

from st_contrast.losses import CachedInfoNCELoss, CLIPLoss, GlobalContrastiveLoss, GradCacheLoss, SigLIPLoss

SIZE = 8
LOSSES = {
    "CLIPLoss": lambda model, gather: CLIPLoss(model, gather_across_devices=gather),
    "CachedInfoNCELoss": lambda model, gather: CachedInfoNCELoss(
        model, gather_across_devices=gather, directions=("query_to_doc", "doc_to_query"),
        partition_mode="per_direction", mini_batch_size=3,
    ),
    "SigLIPLoss": lambda model, gather: SigLIPLoss(model, gather_across_devices=gather),
    "GradCacheLoss(GlobalContrastiveLoss)": lambda model, gather: GradCacheLoss(
        GlobalContrastiveLoss(model, num_samples=SIZE, temperature_scheme="learnable", gather_across_devices=gather),
        mini_batch_size=2,
    ),
}  # fmt: skip


def compare(text_path: str, name: str) -> dict[str, float]:
    rank, world_size = dist.get_rank(), dist.get_world_size()
    images = random_images(SIZE, seed=3)
    captions = [f"caption {i} of the batch" for i in range(SIZE)]
    indices = torch.arange(SIZE)
    part = slice(rank * SIZE // world_size, (rank + 1) * SIZE // world_size)

    model = tiny_two_tower(text_path, seed=2)
    loss_fn = LOSSES[name](model, True)
    cached = isinstance(loss_fn, CachedLossMixin)
    if cached:
        ddp = DistributedDataParallel(model, find_unused_parameters=True)
        for module in list(loss_fn.modules()):
            if getattr(module, "model", None) is model:
                module.model = ddp
    loss = loss_fn(image_text_columns(model, images[part], captions[part]), indices[part])
    loss.backward()
    if not cached:
        for parameter in model.parameters():  # what data parallelism computes: the mean over the ranks
            if parameter.grad is not None:
                dist.all_reduce(parameter.grad)
                parameter.grad /= world_size
    global_loss = loss.detach().clone()
    dist.all_reduce(global_loss)
    global_loss /= world_size

    reference_model = tiny_two_tower(text_path, seed=2)
    reference_fn = LOSSES[name](reference_model, False)
    reference_loss = reference_fn(image_text_columns(reference_model, images, captions), indices)
    reference_loss.backward()
    actual, expected = gradients(model), gradients(reference_model)
    assert actual.keys() == expected.keys() and any("image" in key for key in expected)
    largest = max(float(value.abs().max()) for value in expected.values())
    return {
        "loss": abs(float(global_loss) - float(reference_loss.detach())),
        "gradients": max(float((actual[key] - expected[key]).abs().max()) for key in expected) / largest,
    }


def run(output_dir: str, text_path: str) -> None:
    report = {name: compare(text_path, name) for name in LOSSES}
    if dist.get_rank() == 0:
        (Path(output_dir) / "report.json").write_text(json.dumps(report), encoding="utf8")
