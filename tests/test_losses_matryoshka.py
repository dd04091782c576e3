"""st_contrast's losses inside Sentence Transformers' MatryoshkaLoss: weighted dimensions reach the loss's own
parameters under GradCache as without it, and per-sample state is refused instead of updated once per dimension."""

from __future__ import annotations

import pytest
import torch
from loss_helpers import assert_same_gradients, gradients, tiny_model, tokenize_columns
from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss

from st_contrast.losses import (
    CachedInfoNCELoss,
    GlobalContrastiveLoss,
    GloFND,
    GradCacheLoss,
    InfoNCELoss,
    SigLIPLoss,
)

DIMS, WEIGHTS = [32, 16, 8], [1.0, 0.5, 0.25]


def own_gradients(loss: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Gradients of the parameters the loss owns (not the model's)."""
    in_model = {id(p) for p in loss.model.parameters()}
    return {name: p.grad.clone() for name, p in loss.named_parameters() if id(p) not in in_model}


@pytest.mark.parametrize(
    ("uncached", "cached"),
    [
        (lambda model: InfoNCELoss(model), lambda model: CachedInfoNCELoss(model, mini_batch_size=3)),
        (lambda model: SigLIPLoss(model), lambda model: GradCacheLoss(SigLIPLoss(model), mini_batch_size=3)),
    ],
    ids=["CachedInfoNCELoss", "GradCacheLoss(SigLIPLoss)"],
)
def test_weighted_dimensions_give_the_uncached_gradients(tiny_model_factory, snli_sentences, uncached, cached):
    """Uncached, MatryoshkaLoss weights each dimension's loss, so every gradient (the learned temperature's and
    SigLIP's bias included) is the weighted sum; GradCache must give the same, though its decorator weights only the
    embeddings' gradients."""
    path = tiny_model_factory("bert")
    columns = [snli_sentences[:8], snli_sentences[60:68]]
    results = []
    for build in (uncached, cached):
        model = tiny_model(path)
        inner = build(model)
        loss = MatryoshkaLoss(model, inner, DIMS, WEIGHTS)(tokenize_columns(model, columns), None)
        loss.backward()
        owned = own_gradients(inner.loss if isinstance(inner, (GradCacheLoss, CachedInfoNCELoss)) else inner)
        assert owned and all(grad.abs().sum() > 0 for grad in owned.values())
        results.append((loss.detach(), gradients(model), owned))
    torch.testing.assert_close(results[1][0], results[0][0])
    assert_same_gradients(results[1][1], results[0][1])
    assert_same_gradients(results[1][2], results[0][2])


@pytest.mark.parametrize(
    "build",
    [
        lambda model: GlobalContrastiveLoss(model, num_samples=16),
        lambda model: GradCacheLoss(GlobalContrastiveLoss(model, num_samples=16), mini_batch_size=4),
        lambda model: InfoNCELoss(model, false_negative_detector=GloFND(num_samples=16)),
        lambda model: CachedInfoNCELoss(model, mini_batch_size=4, false_negative_detector=GloFND(num_samples=16)),
    ],
    ids=["GlobalContrastiveLoss", "GradCacheLoss(GlobalContrastiveLoss)", "InfoNCELoss+GloFND", "Cached+GloFND"],
)
def test_per_sample_state_is_refused_before_it_changes(tiny_model_factory, snli_sentences, build):
    model = tiny_model(tiny_model_factory("bert"))
    inner = build(model)
    before = {name: tensor.clone() for name, tensor in inner.named_buffers()}
    loss_fn = MatryoshkaLoss(model, inner, [32, 16])
    features = tokenize_columns(model, [snli_sentences[:8], snli_sentences[60:68]])
    with pytest.raises(ValueError, match="per-sample state"):
        loss_fn(features, torch.arange(8))
    for name, tensor in inner.named_buffers():
        torch.testing.assert_close(tensor, before[name], msg=f"{name} changed")
