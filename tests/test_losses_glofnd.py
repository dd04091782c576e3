"""GloFND: masking formula, threshold learning on planted duplicates, GradCache parity, state and errors."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from loss_helpers import assert_same_gradients, gradients, tiny_model, tokenize_columns

from st_contrast.losses import CachedInfoNCELoss, GloFND, InfoNCELoss, without_sample_state


def reference_masked_info_nce(q, d, thresholds, scale):
    """InfoNCE where every negative with cosine > the anchor's threshold leaves the denominator."""
    sims = F.normalize(q, dim=-1) @ F.normalize(d, dim=-1).T
    total = 0.0
    for i in range(len(q)):
        kept = [j for j in range(len(d)) if j == i or sims[i, j] <= thresholds[i]]
        total = total - (scale * sims[i, i] - torch.logsumexp(scale * sims[i, kept], dim=0))
    return total / len(q)


@pytest.fixture
def model(tiny_model_factory):
    return tiny_model(tiny_model_factory("bert"))


def test_masking_formula_with_given_thresholds(model):
    detector = GloFND(num_samples=20, lr=0.0)
    loss_fn = InfoNCELoss(model, temperature=0.1, learnable_temperature=False, false_negative_detector=detector)
    torch.manual_seed(0)
    q, d = torch.randn(6, 8), torch.randn(6, 8)
    indices = torch.tensor([3, 7, 0, 19, 5, 11])
    detector.thresholds[indices, 0] = torch.tensor([0.0, 0.2, -0.3, 1.0, 0.1, -1.0])
    loss = loss_fn.compute_loss_from_embeddings([q, d], indices)
    expected = reference_masked_info_nce(q, d, detector.thresholds[indices, 0], scale=10.0)
    torch.testing.assert_close(loss, expected)


def planted_duplicate_batch(size: int = 16, dim: int = 32):
    torch.manual_seed(0)
    anchors = torch.randn(size, dim)
    positives = anchors + 0.3 * torch.randn(size, dim)
    positives[1] = positives[0] + 0.01 * torch.randn(dim)  # sample 1's positive duplicates sample 0's
    return anchors, positives


def test_planted_duplicates_get_masked_once_thresholds_adapt(model):
    detector = GloFND(num_samples=16, alpha=0.1, start_step=5, lr=0.05)
    loss_fn = InfoNCELoss(model, learnable_temperature=False, false_negative_detector=detector)
    anchors, positives = planted_duplicate_batch()
    indices = torch.arange(16)
    sims = F.normalize(anchors, dim=-1) @ F.normalize(positives, dim=-1).T
    for _ in range(5):
        loss_fn.compute_loss_from_embeddings([anchors, positives], indices)
    assert torch.all(detector.thresholds == 1.0), "thresholds moved before start_step"
    for _ in range(300):
        loss_fn.compute_loss_from_embeddings([anchors, positives], indices)
    masked = sims > detector.thresholds[:, 0, None]
    masked.fill_diagonal_(False)
    assert masked[0, 1], "the planted duplicate of anchor 0 is not masked"
    # Each threshold sits near its anchor's (1 - alpha) quantile: about alpha of 15 negatives above it.
    assert masked.sum(dim=1).float().mean() <= 0.1 * 15 + 1
    with torch.no_grad():
        kept = loss_fn.compute_loss_from_embeddings([anchors, positives], indices)
    torch.testing.assert_close(kept, reference_masked_info_nce(anchors, positives, detector.thresholds[:, 0], 20.0))
    state = copy.deepcopy(detector.state_dict())
    with torch.no_grad(), without_sample_state():  # other rows than the training samples: nothing masked, no labels
        unmasked = loss_fn.compute_loss_from_embeddings([anchors, positives], None)
    torch.testing.assert_close(unmasked, reference_masked_info_nce(anchors, positives, torch.ones(16), 20.0))
    assert all(torch.equal(detector.state_dict()[name], value) for name, value in state.items())


def test_missing_or_bad_sample_indices_get_a_clear_error(model):
    loss_fn = InfoNCELoss(model, false_negative_detector=GloFND(num_samples=4))
    embeddings = [torch.randn(3, 8), torch.randn(3, 8)]
    with pytest.raises(ValueError, match="add_column\\('label'"):
        loss_fn.compute_loss_from_embeddings(embeddings, None)
    with pytest.raises(ValueError, match="num_samples=len"):
        loss_fn.compute_loss_from_embeddings(embeddings, torch.tensor([0, 1, 9]))
    both = GloFND(4)
    InfoNCELoss(model, directions=("query_to_doc", "doc_to_query"), false_negative_detector=both)
    assert both.thresholds.shape == (4, 2)  # one threshold per sample and direction


@pytest.mark.parametrize("mini_batch_size", [2, 3])
def test_cached_glofnd_equals_uncached(tiny_model_factory, snli_sentences, mini_batch_size):
    path = tiny_model_factory("bert")
    columns = [snli_sentences[:8], snli_sentences[400:408], snli_sentences[500:508]]
    indices = torch.tensor([8, 1, 6, 3, 4, 5, 2, 7])
    detector = GloFND(num_samples=10, alpha=0.2)
    detector.thresholds.fill_(0.2)  # low enough that some in-batch negatives of the tiny model are masked
    results = []
    for cached in (False, True):
        model = tiny_model(path)
        state = copy.deepcopy(detector)
        kwargs = {"temperature": 0.1, "false_negative_detector": state}
        loss_fn = CachedInfoNCELoss(model, mini_batch_size=mini_batch_size, **kwargs) if cached else None
        loss_fn = loss_fn or InfoNCELoss(model, **kwargs)
        loss = loss_fn([dict(f) for f in tokenize_columns(model, columns)], indices)
        loss.backward()
        results.append((loss.detach(), gradients(model), state.state_dict()))
    torch.testing.assert_close(results[1][0], results[0][0])
    assert_same_gradients(results[1][1], results[0][1])
    for name, value in results[0][2].items():
        torch.testing.assert_close(results[1][2][name], value, msg=name)
    assert int(results[0][2]["step"]) == 1 and not torch.equal(results[0][2]["thresholds"], detector.thresholds)


def test_state_dict_round_trip(model):
    detector = GloFND(num_samples=16, alpha=0.1)
    loss_fn = InfoNCELoss(model, learnable_temperature=False, false_negative_detector=detector)
    anchors, positives = planted_duplicate_batch()
    for _ in range(3):
        loss_fn.compute_loss_from_embeddings([anchors, positives], torch.arange(16))
    with torch.no_grad():  # evaluation: masks, but learns nothing
        loss_fn.compute_loss_from_embeddings([anchors, positives], torch.arange(16))
    prefix = "false_negative_detector."
    saved = {key.removeprefix(prefix): value for key, value in loss_fn.state_dict().items() if key.startswith(prefix)}
    restored = GloFND(num_samples=16, alpha=0.1)
    restored.load_state_dict(saved)
    for name, value in detector.state_dict().items():
        torch.testing.assert_close(restored.state_dict()[name], value)
    assert int(restored.step) == 3
