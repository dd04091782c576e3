"""Run on 2 processes (gloo, CPU) by tests/distributed_jobs.py for test_losses_distributed.py.

Checks that a gathered loss on 2 ranks equals one process on the concatenated batch (loss and DDP-averaged
gradients, temperature included), then trains 2 trainer steps and reports whether the learned temperature and
weights are identical on both ranks. Rank 0 writes the measured differences to ``report.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.distributed as dist
from datasets import Dataset
from loss_helpers import gradients, tiny_model, tokenize_columns
from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from torch.nn.parallel import DistributedDataParallel

from st_contrast.losses import (
    CachedInfoNCELoss,
    CLIPLoss,
    GlobalContrastiveLoss,
    GloFND,
    InfoNCELoss,
    SigLIPLoss,
    SimCSELoss,
)
from st_contrast.losses.sample_state import sync_rows

LOSSES = {
    "InfoNCELoss": lambda model, gather: InfoNCELoss(
        model, gather_across_devices=gather, directions=("query_to_doc", "doc_to_query")
    ),
    "CachedInfoNCELoss": lambda model, gather: CachedInfoNCELoss(
        model, gather_across_devices=gather, directions=("query_to_doc", "doc_to_query"), mini_batch_size=3
    ),
    "SigLIPLoss": lambda model, gather: SigLIPLoss(model, gather_across_devices=gather),
    "GlobalContrastiveLoss": lambda model, gather: GlobalContrastiveLoss(
        model, num_samples=8, temperature_scheme="learnable", gather_across_devices=gather
    ),
    "CLIPLoss": lambda model, gather: CLIPLoss(model, gather_across_devices=gather),
    # supervised SimCSE on (anchor, positive, negative); cached, so each view is its own forward pass
    "SimCSELoss": lambda model, gather: SimCSELoss(model, gather_across_devices=gather, mini_batch_size=3),
}


def max_difference(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> float:
    assert actual.keys() == expected.keys(), actual.keys() ^ expected.keys()
    """Largest absolute difference, relative to the largest gradient when that exceeds 1 (fp32 summation noise)."""
    largest = max(float(expected[name].abs().max()) for name in expected)
    return max(float((actual[name] - expected[name]).abs().max()) for name in expected) / max(1.0, largest)


def compare_with_single_process(model_path: str, columns: list[list[str]], name: str) -> dict[str, float]:
    rank, world_size = dist.get_rank(), dist.get_world_size()
    per_rank = len(columns[0]) // world_size
    local_columns = [column[rank * per_rank : (rank + 1) * per_rank] for column in columns]

    model = tiny_model(model_path)
    loss_fn = LOSSES[name](model, True)
    # Wrapped as SentenceTransformerTrainer wraps it. find_unused_parameters=True: ST embeds the anchor column in a
    # forward pass of its own, and DDP with the default False silently skips the gradient sync of two forward passes.
    # broadcast_buffers=False (ST's default): a broadcast before the second forward rewrites BERT's position_ids
    # buffer in place, which the first forward's graph still needs (torch 2.11 then refuses the backward).
    ddp = DistributedDataParallel(model, find_unused_parameters=True, broadcast_buffers=False)
    for module in list(loss_fn.modules()):  # nested losses (SimCSE's inner loss) too, as ST's trainer does
        if getattr(module, "model", None) is model:
            module.model = ddp
    sample_indices = torch.arange(len(columns[0]))
    loss = loss_fn(tokenize_columns(model, local_columns), sample_indices[rank * per_rank : (rank + 1) * per_rank])
    loss.backward()
    global_loss = loss.detach().clone()
    dist.all_reduce(global_loss)
    global_loss /= world_size

    # Reference: every rank computes the whole batch in one process, without gathering.
    reference_model = tiny_model(model_path)
    reference_fn = LOSSES[name](reference_model, False)
    reference_loss = reference_fn(tokenize_columns(reference_model, columns), sample_indices)
    reference_loss.backward()
    state = {"state": float((loss_fn.log_u - reference_fn.log_u).abs().max())} if hasattr(loss_fn, "log_u") else {}
    return {
        **state,
        "loss": abs(float(global_loss) - float(reference_loss.detach())),
        "gradients": max_difference(gradients(model), gradients(reference_model)),
    }


def compare_glofnd_state(model_path: str, columns: list[list[str]]) -> float:
    """Thresholds learned by 2 ranks (each updating its own anchors, then exchanging) vs one process."""
    rank, world_size = dist.get_rank(), dist.get_world_size()
    size = len(columns[0])
    per_rank = size // world_size
    indices = torch.arange(size).flip(0) + 3  # sample indices need not follow the batch order
    states = []
    for gather in (True, False):
        model = tiny_model(model_path)
        detector = GloFND(num_samples=size + 3, alpha=0.3, init_threshold=0.0)
        loss_fn = CachedInfoNCELoss(
            model, gather_across_devices=gather, mini_batch_size=3, false_negative_detector=detector
        )
        part = slice(rank * per_rank, (rank + 1) * per_rank) if gather else slice(0, size)
        features = tokenize_columns(model, [column[part] for column in columns])
        loss_fn(features, indices[part]).backward()
        states.append(detector.state_dict())
    return max(float((states[0][name].double() - states[1][name].double()).abs().max()) for name in states[1])


def train_and_compare_ranks(model_path: str, columns: list[list[str]], output_dir: str) -> dict[str, float]:
    model = tiny_model(model_path)
    loss = CachedInfoNCELoss(model, gather_across_devices=True, mini_batch_size=2)
    dataset = Dataset.from_dict({"anchor": columns[0] * 2, "positive": columns[1] * 2})
    args = SentenceTransformerTrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=4,
        max_steps=2,
        learning_rate=0.05,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        seed=dist.get_rank(),  # different per-rank data order must not desync the temperature
    )
    SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss).train()
    trained = [*model.parameters(), *loss.learned_temperature.parameters()]  # the temperature belongs to the loss
    state = torch.cat([param.detach().flatten() for param in trained])
    gathered = [torch.zeros_like(state) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, state)
    logit_scale = loss.learned_temperature.logit_scale.detach()
    return {
        "rank_difference": float((gathered[0] - gathered[1]).abs().max()),
        "temperature_moved": abs(float(logit_scale) - float(torch.tensor(20.0).log())),
    }


def sync_overlapping_rows() -> dict:
    """Rank 0 updates samples 1 and 2, rank 1 samples 2 and 3 (a padded sampler repeats sample 2): both ranks must
    end with rank 0's row 1, rank 1's row 3, and for row 2 the mean of the floats and the maximum of the counts."""
    rank = dist.get_rank()
    values = torch.zeros(5, 2)
    counts = torch.zeros(5, dtype=torch.long)
    seen = torch.zeros(5, dtype=torch.bool)
    mine = torch.tensor([[1, 2], [2, 3]][rank])
    values[mine] = torch.tensor([[1.0, -1.0], [3.0, 5.0]]) * (rank + 1)  # rank 0: row 2 = (3, 5); rank 1: (2, -2)
    counts[mine] = torch.tensor([[4, 7], [9, 2]][rank])  # row 2: 7 on rank 0, 9 on rank 1
    seen[mine] = True
    sync_rows([values, counts, seen], torch.cat([mine, mine]))  # a sample twice in a rank's own batch, too
    expected = torch.tensor([[0.0, 0.0], [1.0, -1.0], [2.5, 1.5], [6.0, 10.0], [0.0, 0.0]])
    gathered = [None, None]
    dist.all_gather_object(gathered, (values, counts, seen))
    return {
        "values": max(float((state[0] - expected).abs().max()) for state in gathered),
        "counts": [state[1].tolist() for state in gathered],
        "seen": [state[2].tolist() for state in gathered],
    }


def run(output_dir: str, model_path: str, columns: list[list[str]]) -> None:
    report = {name: compare_with_single_process(model_path, columns, name) for name in LOSSES}
    report["GloFND"] = compare_glofnd_state(model_path, columns)
    report["sync_rows"] = sync_overlapping_rows()
    report["trainer"] = train_and_compare_ranks(model_path, columns, str(Path(output_dir) / "trainer"))
    if dist.get_rank() == 0:
        (Path(output_dir) / "report.json").write_text(json.dumps(report), encoding="utf8")
