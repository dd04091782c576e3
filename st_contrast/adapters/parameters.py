"""Counting the parameters an optimizer will update."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

__all__ = ["ParameterCount", "count_parameters"]


@dataclass(frozen=True)
class ParameterCount:
    """Trainable and total parameter counts of a model.

    Args:
        trainable: Parameters with ``requires_grad=True``.
        total: All parameters.
    """

    trainable: int
    total: int

    @property
    def fraction(self) -> float:
        """``trainable / total`` (0 for a model without parameters)."""
        return self.trainable / self.total if self.total else 0.0

    def __str__(self) -> str:
        return f"trainable {self.trainable:,} / {self.total:,} parameters ({self.fraction:.3%})"


def count_parameters(model: nn.Module) -> ParameterCount:
    """Count the trainable and total parameters of ``model`` (shared tensors counted once).

    Args:
        model: Any ``torch.nn.Module``, e.g. a ``SentenceTransformer``.

    Returns:
        A :class:`ParameterCount`; ``print`` it for a one-line summary.

    Example:
        ::

            from st_contrast.adapters import count_parameters

            print(count_parameters(model))  # trainable 22,713,216 / 22,713,216 parameters (100.000%)
    """
    parameters = list(model.parameters())  # named_parameters/parameters already skip shared tensors
    return ParameterCount(
        trainable=sum(p.numel() for p in parameters if p.requires_grad),
        total=sum(p.numel() for p in parameters),
    )
