"""A learnable contrastive temperature (and logit bias) owned by the loss: trained, synced and checkpointed with it."""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = [
    "LearnedTemperature",
    "ScaleFactor",
    "adopt_saved_logit_scale",
    "learned_temperatures",
]

logger = logging.getLogger(__name__)


class _AverageGradientAcrossRanks(torch.autograd.Function):
    """Identity forward; the backward averages the gradient over all ranks, as DDP does for the model's parameters."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            grad = grad.contiguous()
            dist.all_reduce(grad)
            grad = grad / dist.get_world_size()
        return grad


class _MultiplyScores(torch.autograd.Function):
    """``scores * scale`` whose scale gradient skips the ``-inf`` entries of masked scores (0 * inf would be NaN)."""

    @staticmethod
    def forward(ctx: Any, scores: Tensor, scale: Tensor) -> Tensor:
        ctx.save_for_backward(scores, scale)
        return scores * scale

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor]:
        scores, scale = ctx.saved_tensors
        finite_scores = scores.masked_fill(~torch.isfinite(scores), 0.0)
        return grad * scale, (grad * finite_scores).sum().reshape(scale.shape)


class ScaleFactor:
    """A learned scale that multiplies score matrices (``scores * factor``), also those masked with ``-inf``."""

    def __init__(self, tensor: Tensor) -> None:
        self.tensor = tensor

    def __rmul__(self, scores: Tensor) -> Tensor:
        return _MultiplyScores.apply(scores, self.tensor)

    __mul__ = __rmul__

    def __float__(self) -> float:
        return float(self.tensor.detach())


class LearnedTemperature(nn.Module):
    """Learnable logit scale ``exp(logit_scale)`` (= 1 / temperature), optionally with a logit bias (SigLIP).

    The scale is parameterised by its logarithm and kept in ``[min_scale, max_scale]`` as CLIP does (``[1, 100]``:
    the gradient is zero above ``max_scale`` in the forward pass, and :class:`~st_contrast.ContrastiveTrainer` clamps
    the parameter after every optimizer step). It is a submodule of the loss, so the trainer optimizes it with the
    model (Sentence Transformers' optimizer groups cover the loss's parameters), ``ContrastiveTrainer`` excludes it
    from weight decay (which would drag ``log(1/tau)`` to 0, i.e. ``tau`` to 1) and gives it ``lr`` when set, writes
    it to each checkpoint's ``loss_state.pt`` and restores it on resume; it never enters the saved inference model.

    Distributed training: the loss is not wrapped by DDP, so every read through :meth:`scale` / :meth:`bias`
    averages its gradient over the ranks in the backward pass; the value stays identical on every rank.

    Args:
        temperature: Initial temperature; the initial scale is ``1 / temperature``.
        max_scale: Upper clamp of the scale (CLIP uses 100). The gradient is zero above it.
        bias: Initial logit bias (SigLIP uses -10), or None for no bias parameter.
        lr: Its own learning rate under :class:`~st_contrast.ContrastiveTrainer` (it follows the same schedule as the
            model's); None: the model's learning rate.
        min_scale: Lower clamp of the scale after each optimizer step (CLIP: 1, a temperature of at most 1).
    """

    def __init__(
        self,
        temperature: float = 0.05,
        max_scale: float = 100.0,
        bias: float | None = None,
        lr: float | None = None,
        min_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}.")
        if not 1.0 / temperature <= max_scale:
            raise ValueError(
                f"The initial scale 1/temperature = {1.0 / temperature:g} exceeds max_scale = {max_scale:g}: "
                "raise max_scale or the temperature."
            )
        if lr is not None and lr < 0:
            raise ValueError(f"The temperature's learning rate must not be negative, got {lr}.")
        self.max_scale = max_scale
        self.min_scale = min(min_scale, 1.0 / temperature)
        self.lr = lr
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))
        self.logit_bias = nn.Parameter(torch.tensor(float(bias))) if bias is not None else None

    def scale(self) -> Tensor:
        """The current scale ``min(exp(logit_scale), max_scale)`` as a differentiable, rank-synced scalar."""
        log_scale = _AverageGradientAcrossRanks.apply(self.logit_scale)
        return torch.clamp(log_scale, max=math.log(self.max_scale)).exp()

    def bias(self) -> Tensor:
        """The current logit bias as a differentiable, rank-synced scalar."""
        if self.logit_bias is None:
            raise ValueError("This LearnedTemperature has no bias: create it with LearnedTemperature(bias=...).")
        return _AverageGradientAcrossRanks.apply(self.logit_bias)

    @property
    def temperature(self) -> float:
        return 1.0 / float(self.scale().detach())

    @torch.no_grad()
    def clamp_(self) -> None:
        """Keep ``logit_scale`` in ``[log(min_scale), log(max_scale)]`` (after an optimizer step, as CLIP does)."""
        self.logit_scale.clamp_(math.log(self.min_scale), math.log(self.max_scale))

    def extra_repr(self) -> str:
        bias = "" if self.logit_bias is None else f", bias={float(self.logit_bias.detach()):.4g}"
        return f"temperature={self.temperature:.4g}, max_scale={self.max_scale:g}{bias}"


def adopt_saved_logit_scale(model: nn.Module, temperature: LearnedTemperature) -> None:
    """Move the learned values of a ``LogitScale`` module (models saved by st_contrast 0.1) into ``temperature``.

    That release kept the temperature as the model's last module; it now belongs to the loss. The module is removed
    from ``model``, so the model saves as a plain Sentence Transformers model, and training continues from its
    learned temperature (and bias).
    """
    from st_contrast.modules.temperature import LogitScale

    for name, module in list(model.named_children()):
        if not isinstance(module, LogitScale):
            continue
        with torch.no_grad():
            temperature.logit_scale.copy_(module.logit_scale.to(temperature.logit_scale.device))
            if temperature.logit_bias is not None:
                if module.logit_bias is None:
                    raise ValueError(
                        "The model's saved LogitScale has no bias, but this loss learns one: start from a fresh model."
                    )
                temperature.logit_bias.copy_(module.logit_bias.to(temperature.logit_bias.device))
        del model._modules[name]
        logger.info(
            "Took the learned temperature %.4g from the model's LogitScale module (st_contrast 0.1 format) into the "
            "loss and removed the module: the model now saves as a plain Sentence Transformers model.",
            temperature.temperature,
        )


def learned_temperatures(loss: nn.Module | dict[str, nn.Module]) -> list[LearnedTemperature]:
    """Every :class:`LearnedTemperature` of a loss (or of a dict of losses), each once."""
    modules = loss.values() if isinstance(loss, dict) else [loss]
    found: dict[int, LearnedTemperature] = {}
    for module in modules:
        for child in module.modules():
            if isinstance(child, LearnedTemperature):
                found.setdefault(id(child), child)
    return list(found.values())
