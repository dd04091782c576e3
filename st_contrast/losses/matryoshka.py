"""What st_contrast's losses need to know of Sentence Transformers' ``MatryoshkaLoss`` around them.

``MatryoshkaLoss`` evaluates the loss it wraps once per dimension: an uncached loss through a ``ForwardDecorator``
that replaces the model's ``forward`` (each call sees truncated embeddings), a GradCache loss through a
``CachedLossDecorator`` that replaces its ``calculate_loss``. Two consequences for the losses here:

- The ``CachedLossDecorator`` weights only the embeddings' gradients (``matryoshka_weights``). What a GradCache loss
  back-propagates to its own parameters inside ``calculate_loss`` (a learned temperature, SigLIP's bias) must be
  weighted by the loss itself: :func:`matryoshka_weight`.
- A loss with per-sample state (GloFND thresholds, SogCLR / FastCLIP moving averages) would update it once per
  dimension, each time from another embedding: :func:`refuse_per_sample_state` stops it.
"""

from __future__ import annotations

from typing import Any

from sentence_transformers.sentence_transformer.losses.matryoshka import CachedLossDecorator, ForwardDecorator
from torch import Tensor, nn

__all__ = ["in_matryoshka", "matryoshka_weight", "refuse_per_sample_state"]


def _decorator(loss: nn.Module) -> CachedLossDecorator | None:
    decorator = vars(loss).get("calculate_loss")
    return decorator if isinstance(decorator, CachedLossDecorator) else None


def matryoshka_weight(loss: nn.Module, reps: list[list[Tensor]]) -> float:
    """The Matryoshka weight of the dimension ``reps`` are truncated to, for the ``calculate_loss`` of GradCache loss
    ``loss``; 1.0 when no ``MatryoshkaLoss`` decorates it.

    Raises:
        ValueError: The dimension is listed twice with different weights (which of them applies is unknowable).
    """
    decorator = _decorator(loss)
    if decorator is None:
        return 1.0
    width = reps[0][0].shape[-1]
    weights = {
        float(w) for d, w in zip(decorator.matryoshka_dims, decorator.matryoshka_weights, strict=True) if d == width
    }
    if len(weights) != 1:
        raise ValueError(
            f"MatryoshkaLoss lists dimension {width} with the weights {sorted(weights)}: give each dimension once."
        )
    return weights.pop()


def in_matryoshka(loss: nn.Module, model: Any) -> bool:
    """Whether ``loss`` (a GradCache loss's ``calculate_loss``) or ``model`` (an uncached loss's embedding model) is
    evaluated by a ``MatryoshkaLoss`` right now."""
    return _decorator(loss) is not None or isinstance(vars(model).get("forward"), ForwardDecorator)


def refuse_per_sample_state(name: str) -> None:
    """Raise the error of a per-sample-state loss found inside ``MatryoshkaLoss`` (see the module docs)."""
    raise ValueError(
        f"{name} keeps per-sample state (GloFND thresholds, SogCLR / FastCLIP moving averages) for one embedding, "
        "and MatryoshkaLoss would update it once per dimension, from another embedding each time. Train it "
        "without MatryoshkaLoss (no loss.matryoshka in a config), or use Matryoshka with a stateless loss "
        "(InfoNCELoss, CachedInfoNCELoss, SigLIPLoss)."
    )
