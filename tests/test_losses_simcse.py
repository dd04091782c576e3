"""SimCSELoss: formulas, and distinct dropout masks for the two views, also under GradCache's RNG replay."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from loss_helpers import assert_same_gradients, embed_like_gradcache, gradients, tiny_model, tokenize_columns
from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss

from st_contrast.losses import SimCSELoss


def reference_simcse(view1, view2, negatives=None, scale=20.0):
    """SimCSE, eq. 1 (unsupervised) and eq. 5 (supervised): softmax over the other views (+ hard negatives)."""
    candidates = view2 if negatives is None else torch.cat([view2, negatives])
    logits = scale * F.normalize(view1, dim=-1) @ F.normalize(candidates, dim=-1).T
    return F.cross_entropy(logits, torch.arange(len(view1)))


def train_one_step(path: str, sentences: list[str], build_loss):
    """A tiny model with dropout and the loss ``build_loss(model)`` back-propagated once on ``sentences``."""
    model = tiny_model(path, dropout=True)
    model.train()
    loss_fn = build_loss(model)
    torch.manual_seed(7)
    loss = loss_fn([dict(tokenize_columns(model, [sentences])[0])], None)
    loss.backward()
    return model, loss


def reference_views(path: str, sentences: list[str], mini_batch_size: int | None):
    """The two views embedded in the same order of forward passes (same RNG draws), with gradients."""
    reference_model = tiny_model(path, dropout=True)
    reference_model.train()
    torch.manual_seed(7)
    features = tokenize_columns(reference_model, [sentences])[0]
    chunk = mini_batch_size or len(sentences)
    view1, view2 = embed_like_gradcache(reference_model, [dict(features), dict(features)], chunk)
    return reference_model, view1, view2


@pytest.mark.parametrize("mini_batch_size", [None, 2, 3])
def test_unsupervised_views_use_different_dropout_masks(tiny_model_factory, snli_sentences, mini_batch_size):
    path = tiny_model_factory("bert")
    sentences = snli_sentences[:6]
    model, loss = train_one_step(path, sentences, lambda model: SimCSELoss(model, mini_batch_size=mini_batch_size))
    reference_model, view1, view2 = reference_views(path, sentences, mini_batch_size)
    assert (view1 - view2).abs().max() > 1e-3, "the two views got the same dropout masks"
    expected = reference_simcse(view1, view2)
    expected.backward()
    torch.testing.assert_close(loss.detach(), expected.detach())
    assert_same_gradients(gradients(model), gradients(reference_model))


def test_supervised_formula_with_hard_negatives(tiny_model_factory):
    model = tiny_model(tiny_model_factory("bert"))
    loss_fn = SimCSELoss(model)
    torch.manual_seed(0)
    anchors, positives, negatives = (torch.randn(5, 8) for _ in range(3))
    actual = loss_fn.loss.compute_loss_from_embeddings([anchors, positives, negatives], None)
    torch.testing.assert_close(actual, reference_simcse(anchors, positives, negatives))


@pytest.mark.parametrize("mini_batch_size", [None, 2, 4])
def test_unsupervised_under_matryoshka(tiny_model_factory, snli_sentences, mini_batch_size):
    """MatryoshkaLoss around SimCSELoss, with or without GradCache: the weighted sum of SimCSE at every width."""
    path = tiny_model_factory("bert")
    sentences = snli_sentences[:6]
    dims, weights = [32, 16, 8], [1.0, 0.5, 0.25]
    model, loss = train_one_step(
        path,
        sentences,
        lambda model: MatryoshkaLoss(model, SimCSELoss(model, mini_batch_size=mini_batch_size), dims, weights),
    )
    reference_model, view1, view2 = reference_views(path, sentences, mini_batch_size)
    expected = sum(
        weight * reference_simcse(view1[:, :dim], view2[:, :dim]) for dim, weight in zip(dims, weights, strict=True)
    )
    expected.backward()
    torch.testing.assert_close(loss.detach(), expected.detach())
    assert_same_gradients(gradients(model), gradients(reference_model))
