"""``LogitScale``: where st_contrast 0.1 kept a learned temperature, inside the model. Kept so those models load."""

from __future__ import annotations

import math
from typing import Any

try:
    from typing import Self
except ImportError:  # Python < 3.11
    from typing_extensions import Self

import torch
from sentence_transformers.base.modules.module import Module
from torch import Tensor, nn

__all__ = ["LogitScale"]


class LogitScale(Module):
    """A learned logit scale (and bias) saved as the last module of models trained with st_contrast 0.1.

    The temperature now belongs to the loss (:class:`~st_contrast.losses.temperature.LearnedTemperature`). A model
    that still has this module loads with :func:`st_contrast.load_model`, embeds exactly as before (the module passes
    the features through), and a loss built on it takes over its learned values and removes it, so the model then
    saves in the plain format. :func:`st_contrast.export_model` drops it.

    Args:
        temperature: The saved temperature (``1 / exp(logit_scale)``).
        max_scale: The scale's upper clamp.
        bias: The saved logit bias, or None.
    """

    config_keys: list[str] = ["temperature", "max_scale", "bias"]

    def __init__(self, temperature: float = 0.05, max_scale: float = 100.0, bias: float | None = None) -> None:
        super().__init__()
        self.max_scale = max_scale
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))
        self.logit_bias = nn.Parameter(torch.tensor(float(bias))) if bias is not None else None

    def forward(self, features: dict[str, Tensor], **kwargs) -> dict[str, Tensor]:
        return features

    def get_config_dict(self) -> dict[str, Any]:
        bias = None if self.logit_bias is None else float(self.logit_bias.detach())
        return {"temperature": math.exp(-float(self.logit_scale.detach())), "max_scale": self.max_scale, "bias": bias}

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
