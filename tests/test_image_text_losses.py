"""Contrastive losses on image-text batches: both directions against a hand computation, GradCache over both
towers against the uncached losses, and a 2-process gloo run of the gathered losses against one process."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from image_text_helpers import image_text_columns, random_images, tiny_two_tower
from loss_helpers import gradients

from st_contrast.losses import CachedInfoNCELoss, CLIPLoss, GlobalContrastiveLoss, GradCacheLoss, SigLIPLoss

CAPTIONS = [f"a {colour} {shape}" for colour in ("red", "blue", "green") for shape in ("circle", "square", "cross")]


@pytest.fixture(scope="module")
def base_model(tiny_model_factory):
    """One two-tower model (both towers trained); each test takes a copy."""
    return tiny_two_tower(tiny_model_factory("bert"), seed=1)


def test_clip_loss_on_images_and_captions_is_the_mean_of_both_directions(base_model):
    model = copy.deepcopy(base_model)
    images = random_images(len(CAPTIONS))
    loss_fn = CLIPLoss(model, temperature=0.05)
    loss = loss_fn(image_text_columns(model, images, CAPTIONS), None)
    with torch.no_grad():
        image_embeddings = F.normalize(torch.tensor(model.encode(images)), dim=-1)
        text_embeddings = F.normalize(torch.tensor(model.encode(CAPTIONS)), dim=-1)
    logits = image_embeddings @ text_embeddings.T / 0.05
    targets = torch.arange(len(CAPTIONS))
    expected = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
    torch.testing.assert_close(loss.detach(), expected, atol=1e-5, rtol=1e-5)


def _relative_gradient_error(actual: dict, expected: dict) -> float:
    assert actual.keys() == expected.keys() and expected
    error = max(float((actual[name] - expected[name]).abs().max()) for name in expected)
    return error / max(float(tensor.abs().max()) for tensor in expected.values())


CACHED = {
    "CLIP (CachedInfoNCELoss)": (
        lambda model: CLIPLoss(model),
        lambda model: CachedInfoNCELoss(
            model, temperature=0.07, mini_batch_size=3, directions=("query_to_doc", "doc_to_query"),
            partition_mode="per_direction",
        ),
    ),
    "CLIP (GradCacheLoss)": (lambda model: CLIPLoss(model), lambda model: GradCacheLoss(CLIPLoss(model), 3)),
    "SigLIP": (lambda model: SigLIPLoss(model), lambda model: GradCacheLoss(SigLIPLoss(model), 4)),
    "FastCLIP": (
        lambda model: GlobalContrastiveLoss(model, num_samples=9, temperature_scheme="learnable"),
        lambda model: GradCacheLoss(GlobalContrastiveLoss(model, num_samples=9, temperature_scheme="learnable"), 2),
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(CACHED))
def test_gradcache_over_both_towers_gives_the_uncached_gradients(base_model, name):
    """Image and text towers run in mini-batches; model and temperature gradients equal the uncached loss's."""
    images, labels = random_images(len(CAPTIONS)), torch.arange(len(CAPTIONS))
    results = []
    for build in CACHED[name]:
        model = copy.deepcopy(base_model)
        loss_fn = build(model)
        loss = loss_fn(image_text_columns(model, images, CAPTIONS), labels)
        loss.backward()
        temperature = {f"loss.{n}": p.grad.clone() for n, p in loss_fn.named_parameters() if p.grad is not None}
        results.append((float(loss), {**gradients(model), **{n.split("loss.")[-1]: g for n, g in temperature.items()}}))
    (loss, expected), (cached_loss, actual) = results
    assert any("image" in key for key in expected) and any("text" in key for key in expected)
    assert abs(cached_loss - loss) < 1e-5 * max(1.0, abs(loss))
    assert _relative_gradient_error(actual, expected) < 1e-4


def test_gathered_image_text_losses_on_two_processes_equal_one_process(two_process_runs):
    report = json.loads((two_process_runs["distributed_image_text_worker"] / "report.json").read_text())
    for name in ("CLIPLoss", "CachedInfoNCELoss", "SigLIPLoss", "GradCacheLoss(GlobalContrastiveLoss)"):
        assert report[name]["loss"] < 1e-5, report
        assert report[name]["gradients"] < 1e-4, report


def test_an_uncached_loss_on_two_towers_is_refused_on_several_processes(base_model):
    """DDP cannot reduce two towers embedded in separate forward passes (see the 2-process test): only GradCache."""
    from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss

    from st_contrast.training.trainer import check_tower_loss

    model = copy.deepcopy(base_model)
    with pytest.raises(ValueError, match="CLIPLoss on a two-tower .* cannot train on 2 processes.*loss.gradcache"):
        check_tower_loss(model, CLIPLoss(model), world_size=2)
    check_tower_loss(model, CLIPLoss(model), world_size=1)
    check_tower_loss(model, GradCacheLoss(SigLIPLoss(model)), world_size=2)
    cached = CachedInfoNCELoss(model, directions=("query_to_doc", "doc_to_query"), partition_mode="per_direction")
    check_tower_loss(model, MatryoshkaLoss(model, cached, [16, 8]), world_size=2)
