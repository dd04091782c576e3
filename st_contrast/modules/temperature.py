"""A learnable logit scale (inverse temperature) and bias that live in the model, so they are saved with it."""

from __future__ import annotations

import math
from typing import Any

try:
    from typing import Self
except ImportError:  # Python < 3.11
    from typing_extensions import Self

import torch
import torch.distributed as dist
from sentence_transformers.base.modules.module import Module
from torch import Tensor, nn

__all__ = ["LogitScale", "ScaleFactor"]


class _AverageGradientAcrossRanks(torch.autograd.Function):
    """Identity forward; the backward averages the gradient over all ranks, as DDP does for its parameters."""

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


class LogitScale(Module):
    """Learnable contrastive logit scale ``exp(logit_scale)`` (= 1 / temperature), optionally with a logit bias.

    The scale is parameterised by its logarithm and clamped at ``max_scale`` (CLIP: 100). The module is
    appended to a ``SentenceTransformer`` by the losses that learn it (it passes the features through
    unchanged), so ``model.save(dir)`` writes the learned values and reloading restores them
    (``st_contrast.load_model(dir)``).

    Distributed training: the parameters are excluded from DDP's own gradient reduction (the losses
    use them outside the model's forward pass, e.g. in GradCache's loss stage); instead every read
    through :meth:`scale` / :meth:`bias` averages its gradient over the ranks in the backward pass, so
    the values stay identical on every rank after each optimizer step.

    Args:
        temperature: Initial temperature; the initial scale is ``1 / temperature``.
        max_scale: Upper clamp of the scale (CLIP uses 100). The gradient is zero above it.
        bias: Initial logit bias (SigLIP uses -10), or None for no bias parameter.
    """

    config_keys: list[str] = ["temperature", "max_scale", "bias"]

    def __init__(self, temperature: float = 0.05, max_scale: float = 100.0, bias: float | None = None) -> None:
        super().__init__()
        if not 0 < temperature:
            raise ValueError(f"temperature must be positive, got {temperature}.")
        if not 1.0 / temperature <= max_scale:
            raise ValueError(
                f"The initial scale 1/temperature = {1.0 / temperature:g} exceeds max_scale = {max_scale:g}: "
                "raise max_scale or the temperature."
            )
        self.temperature = temperature
        self.max_scale = max_scale
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))
        self.logit_bias = nn.Parameter(torch.tensor(float(bias))) if bias is not None else None

    def forward(self, features: dict[str, Tensor], **kwargs) -> dict[str, Tensor]:
        return features

    def scale(self) -> Tensor:
        """The current scale ``min(exp(logit_scale), max_scale)`` as a differentiable, rank-synced scalar."""
        log_scale = _AverageGradientAcrossRanks.apply(self.logit_scale)
        return torch.clamp(log_scale, max=math.log(self.max_scale)).exp()

    def bias(self) -> Tensor:
        """The current logit bias as a differentiable, rank-synced scalar."""
        if self.logit_bias is None:
            raise ValueError("This LogitScale has no bias: create it with LogitScale(bias=...).")
        return _AverageGradientAcrossRanks.apply(self.logit_bias)

    def get_config_dict(self) -> dict[str, Any]:
        bias = None if self.logit_bias is None else float(self.logit_bias.detach())
        return {"temperature": 1.0 / float(self.scale().detach()), "max_scale": self.max_scale, "bias": bias}

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        self.save_config(output_path)
        self.save_torch_weights(output_path, safe_serialization=safe_serialization)

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", **kwargs) -> Self:
        hub_kwargs = {
            key: kwargs[key] for key in ("token", "cache_folder", "revision", "local_files_only") if key in kwargs
        }
        config = cls.load_config(model_name_or_path=model_name_or_path, subfolder=subfolder, **hub_kwargs)
        module = cls(**{key: value for key, value in config.items() if key in cls.config_keys})
        return cls.load_torch_weights(model_name_or_path, subfolder=subfolder, model=module, **hub_kwargs)

    def __repr__(self) -> str:
        return f"LogitScale({self.get_config_dict()})"


def find_or_add_logit_scale(model: nn.Module, temperature: float, max_scale: float, bias: float | None) -> LogitScale:
    """The model's ``LogitScale`` (e.g. restored from a saved model), or a new one appended to the model.

    The parameters are registered in ``model._ddp_params_and_buffers_to_ignore`` so that DDP leaves
    their gradient to :class:`LogitScale` (see its docstring).
    """
    found = [module for module in model.children() if isinstance(module, LogitScale)]
    if found:
        module = found[0]
        if bias is not None and module.logit_bias is None:
            raise ValueError("The model's LogitScale has no bias, but this loss learns one: start from a fresh model.")
    else:
        module = LogitScale(temperature=temperature, max_scale=max_scale, bias=bias)
        device = next(model.parameters()).device
        model.append(module.to(device))
    names = [name for name, param in model.named_parameters() if any(param is p for p in module.parameters())]
    ignored = list(getattr(model, "_ddp_params_and_buffers_to_ignore", []))
    model._ddp_params_and_buffers_to_ignore = ignored + [name for name in names if name not in ignored]
    return module
