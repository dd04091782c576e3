"""GloFND in every direction and inside the global contrastive loss, its schedule, against hand-written formulas."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from loss_helpers import assert_same_gradients, gradients, tiny_model, tokenize_columns

from st_contrast.losses import CachedInfoNCELoss, CLIPLoss, GlobalContrastiveLoss, GloFND, InfoNCELoss

BOTH = ("query_to_doc", "doc_to_query")


@pytest.fixture
def model(tiny_model_factory):
    return tiny_model(tiny_model_factory("bert"))


def cosine(a, b):
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T


def reference_clip(q, d, thresholds, scale):
    """Symmetric InfoNCE; anchor i's negatives above its own threshold of that direction leave its softmax."""
    sims = cosine(q, d)
    total = 0.0
    for i in range(len(q)):
        forward = [j for j in range(len(d)) if j == i or sims[i, j] <= thresholds[i, 0]]  # query i vs documents
        backward = [j for j in range(len(q)) if j == i or sims[j, i] <= thresholds[i, 1]]  # document i vs queries
        log_z = (torch.logsumexp(scale * sims[i, forward], 0) + torch.logsumexp(scale * sims[backward, i], 0)) / 2
        total = total - (scale * sims[i, i] - log_z)
    return total / len(q)


def test_clip_masks_each_direction_with_its_own_thresholds(model):
    detector = GloFND(num_samples=12, lr=0.0)
    loss_fn = CLIPLoss(model, temperature=0.1, learnable_temperature=False, false_negative_detector=detector)
    torch.manual_seed(0)
    q, d = torch.randn(6, 8, requires_grad=True), torch.randn(6, 8, requires_grad=True)
    indices = torch.tensor([3, 7, 0, 11, 5, 9])
    detector.thresholds[indices] = torch.tensor(
        [[0.0, 0.5], [0.2, -0.4], [-0.3, 0.1], [1.0, -1.0], [0.1, 0.0], [-1.0, 1.0]]
    )
    loss = loss_fn.compute_loss_from_embeddings([q, d], indices)
    reference_q, reference_d = q.detach().clone().requires_grad_(), d.detach().clone().requires_grad_()
    expected = reference_clip(reference_q, reference_d, detector.thresholds[indices], scale=10.0)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    expected.backward()
    torch.testing.assert_close(q.grad, reference_q.grad)
    torch.testing.assert_close(d.grad, reference_d.grad)


def test_both_directions_learn_their_thresholds_independently(model):
    """One Adam step from 0 moves a threshold by -lr * sign(alpha - fraction above) in each direction."""
    detector = GloFND(num_samples=8, alpha=0.3, lr=0.1, init_threshold=0.0)
    loss_fn = InfoNCELoss(model, learnable_temperature=False, directions=BOTH, partition_mode="per_direction",
                          false_negative_detector=detector)  # fmt: skip
    torch.manual_seed(4)
    q, d = torch.randn(8, 16), torch.randn(8, 16)
    loss_fn.compute_loss_from_embeddings([q, d], torch.arange(8))
    sims = cosine(q, d)
    off_diagonal = ~torch.eye(8, dtype=torch.bool)
    for column, matrix in enumerate((sims, sims.T)):  # query->document rows, document->query rows
        fraction = ((matrix > 0) & off_diagonal).sum(1) / 7
        expected = -0.1 * torch.sign(0.3 - fraction)
        torch.testing.assert_close(detector.thresholds[:, column], expected, atol=1e-6, rtol=0)
    assert not torch.equal(detector.thresholds[:, 0], detector.thresholds[:, 1])


@pytest.mark.parametrize("mini_batch_size", [2, 3])
def test_cached_both_directions_equal_uncached(tiny_model_factory, snli_sentences, mini_batch_size):
    path = tiny_model_factory("bert")
    columns = [snli_sentences[:8], snli_sentences[400:408], snli_sentences[500:508]]
    indices = torch.tensor([8, 1, 6, 3, 4, 5, 2, 7])
    detector = GloFND(num_samples=10, alpha=0.2)
    detector.bind(BOTH)
    detector.thresholds.fill_(0.2)
    results = []
    for cached in (False, True):
        model = tiny_model(path)
        state = copy.deepcopy(detector)
        kwargs = {"temperature": 0.1, "false_negative_detector": state, "directions": BOTH}
        loss_fn = CachedInfoNCELoss(model, mini_batch_size=mini_batch_size, **kwargs) if cached else None
        loss_fn = loss_fn or InfoNCELoss(model, **kwargs)
        loss = loss_fn([dict(f) for f in tokenize_columns(model, columns)], indices)
        loss.backward()
        results.append((loss.detach(), gradients(model), state.state_dict()))
    torch.testing.assert_close(results[1][0], results[0][0])
    assert_same_gradients(results[1][1], results[0][1])
    for name, value in results[0][2].items():
        torch.testing.assert_close(results[1][2][name], value, msg=name)


def reference_global_with_glofnd(q, d, thresholds, tau):
    """The SogCLR objective with false negatives removed, written out anchor by anchor at a first visit (u = g):
    value sum over directions of mean_i tau * log(g_i), g_i over the kept negatives only."""
    sims = cosine(q, d)
    total = 0.0
    for column, matrix in enumerate((sims, sims.T)):
        values = []
        for i in range(len(q)):
            kept = [j for j in range(len(q)) if j != i and matrix[i, j] <= thresholds[i, column]]
            if not kept:  # every negative detected: the anchor adds nothing
                values.append(0.0 * matrix[i, i])
                continue
            g = torch.stack([((matrix[i, j] - matrix[i, i]) / tau).exp() for j in kept]).mean()
            values.append(tau * torch.log(g))
        total = total + torch.stack(values).mean()
    return total


def test_glofnd_inside_the_global_contrastive_loss_matches_the_formula(model):
    detector = GloFND(num_samples=10, lr=0.0)
    loss_fn = GlobalContrastiveLoss(model, num_samples=10, temperature=0.2, false_negative_detector=detector)
    torch.manual_seed(2)
    q, d = torch.randn(5, 8, requires_grad=True), torch.randn(5, 8, requires_grad=True)
    indices = torch.tensor([9, 2, 4, 0, 6])
    detector.thresholds[indices] = torch.tensor([[0.1, 0.3], [-0.2, 0.0], [0.4, -0.5], [1.0, 1.0], [0.0, 0.2]])
    loss = loss_fn.compute_loss_from_embeddings([q, d], indices)
    reference_q, reference_d = q.detach().clone().requires_grad_(), d.detach().clone().requires_grad_()
    expected = reference_global_with_glofnd(reference_q, reference_d, detector.thresholds[indices], tau=0.2)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    expected.backward()
    torch.testing.assert_close(q.grad, reference_q.grad)
    torch.testing.assert_close(d.grad, reference_d.grad)
    # the moving averages hold the g of the kept negatives (and stay 0 for an anchor left without any)
    sims = cosine(q, d).detach()
    kept = (sims <= detector.thresholds[indices, 0, None]) & ~torch.eye(5, dtype=torch.bool)
    g = (((sims - sims.diagonal()[:, None]) / 0.2).exp() * kept).sum(1) / kept.sum(1).clamp(min=1)
    torch.testing.assert_close(loss_fn.log_u[indices, 0].exp(), torch.where(kept.any(1), g, torch.ones_like(g)))
    assert bool(loss_fn.seen[indices, 0].eq(kept.any(1)).all())


def test_schedule_separates_threshold_learning_from_filtering(model):
    detector = GloFND(num_samples=6, alpha=0.2, lr=0.1, start_update=2, start_filtering=4, init_threshold=0.0)
    loss_fn = InfoNCELoss(model, learnable_temperature=False, false_negative_detector=detector)
    plain = InfoNCELoss(model, learnable_temperature=False)
    torch.manual_seed(1)
    q, d = torch.randn(6, 8), torch.randn(6, 8)
    indices = torch.arange(6)
    for step in range(6):
        detector.set_progress(step, step / 3)
        before = detector.thresholds.clone()
        loss = loss_fn.compute_loss_from_embeddings([q, d], indices)
        unmasked = plain.compute_loss_from_embeddings([q, d], indices)
        assert torch.equal(detector.thresholds, before) is (step < 2), step
        assert torch.allclose(loss, unmasked) is (step < 4 or not (cosine(q, d) > before[:, :1]).any()), step
    epochs = GloFND(num_samples=6, start_update=1, start_filtering=1, schedule_unit="epoch")
    epochs.set_progress(step=50, epoch=0.9)
    assert not epochs.updating
    epochs.set_progress(step=51, epoch=1.0)
    assert epochs.updating and epochs.filtering
    with pytest.raises(ValueError, match="start_filtering"):
        GloFND(num_samples=6, start_update=3, start_filtering=1)


def test_init_quantile_resets_a_threshold_to_its_batch_quantile_at_its_first_update(model):
    """The first update sets each threshold to its (1 - alpha) batch quantile, with no Adam step on top (the authors'
    ``LambdaThreshold.update``); the next update is Adam's first step: with bias correction it moves by ``lr``."""
    lr, alpha = 0.05, 0.2
    detector = GloFND(num_samples=6, alpha=alpha, lr=lr, init_quantile=True)
    loss_fn = InfoNCELoss(model, learnable_temperature=False, false_negative_detector=detector)
    torch.manual_seed(3)
    q, d = torch.randn(6, 8), torch.randn(6, 8)
    loss_fn.compute_loss_from_embeddings([q, d], torch.arange(6))
    sims = cosine(q, d)
    others = ~torch.eye(6, dtype=torch.bool)
    expected = torch.stack([torch.quantile(sims[i][others[i]], 1 - alpha) for i in range(6)])
    torch.testing.assert_close(detector.thresholds[:, 0], expected)

    loss_fn.compute_loss_from_embeddings([q, d], torch.arange(6))
    fraction_above = ((sims > expected[:, None]) & others).sum(dim=1) / 5
    grad = alpha - fraction_above  # the threshold's gradient: too few above it lowers it
    torch.testing.assert_close(detector.thresholds[:, 0], expected - lr * grad / (grad.abs() + detector.eps))


def test_a_detector_shared_by_losses_of_other_directions_is_refused(model):
    """Binding a detector to a second loss with other directions would reset the thresholds the first one learns."""
    detector = GloFND(num_samples=6)
    InfoNCELoss(model, false_negative_detector=detector)
    InfoNCELoss(model, false_negative_detector=detector)  # the same directions share the thresholds
    with pytest.raises(ValueError, match="already belongs to a loss with the directions"):
        CLIPLoss(model, false_negative_detector=detector)
    assert detector.thresholds.shape == (6, 1)
