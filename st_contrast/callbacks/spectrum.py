"""Weight spectrum: ``sigma_1 / mean(sigma)`` of chosen weight matrices during training.

A weight matrix whose top singular value grows far above the mean (a rising ratio) is concentrating
its updates in few directions, which often precedes representation collapse or loss spikes; kl3m's
embedding research tracks this ratio per layer. Computed on rank 0, every N optimizer steps.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from transformers import TrainerCallback

logger = logging.getLogger(__name__)

__all__ = ["WeightSpectrumCallback", "sharded_parameters_reason", "spectral_ratio", "weight_spectrum"]


def spectral_ratio(weight: torch.Tensor) -> float:
    """``sigma_1 / mean(sigma)`` of a 2-D matrix (1.0 for a multiple of an orthogonal matrix)."""
    if weight.dim() != 2:
        raise ValueError(f"spectral_ratio needs a 2-D weight matrix, got shape {tuple(weight.shape)}.")
    singular_values = torch.linalg.svdvals(weight.detach().float())
    mean = singular_values.mean()
    return float(singular_values[0] / mean) if mean > 0 else float("nan")


def _selected(model: nn.Module, patterns: Sequence[str] | None) -> list[tuple[str, torch.Tensor]]:
    compiled = [re.compile(pattern) for pattern in patterns or ()]
    chosen = []
    for module_name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        name = f"{module_name}.weight" if module_name else "weight"
        if compiled and not any(pattern.search(name) for pattern in compiled):
            continue
        chosen.append((name, module.weight))
    if patterns and not chosen:
        example = next((n for n, m in model.named_modules() if isinstance(m, nn.Linear)), "?")
        raise ValueError(
            f"No nn.Linear weight matches the spectrum patterns {list(patterns)} (regular expressions searched in "
            f"parameter names such as {example + '.weight'!r})."
        )
    return chosen


def weight_spectrum(
    model: nn.Module, patterns: Sequence[str] | None = None, per_matrix: bool = True
) -> dict[str, float]:
    """``spectrum/<weight name>`` ratios of the ``nn.Linear`` weights matching ``patterns`` (regular
    expressions searched in the parameter name; None: all), plus ``spectrum/mean`` and ``spectrum/max``."""
    ratios = {name.removesuffix(".weight"): spectral_ratio(weight) for name, weight in _selected(model, patterns)}
    metrics = {f"spectrum/{name}": ratio for name, ratio in ratios.items()} if per_matrix else {}
    if ratios:
        values = torch.tensor(list(ratios.values()))
        metrics["spectrum/mean"] = float(values.mean())
        metrics["spectrum/max"] = float(values.max())
    return metrics


def sharded_parameters_reason(args: Any, model: nn.Module | None) -> str | None:
    """Why the weights cannot be read whole on one rank (ZeRO-3, FSDP, DTensor), or None."""
    if getattr(args, "fsdp", None) or os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true"):
        return "FSDP shards the weights"
    if os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3":
        return "DeepSpeed ZeRO-3 partitions the weights"
    deepspeed_plugin = getattr(getattr(args, "hf_deepspeed_config", None), "config", None)
    if isinstance(deepspeed_plugin, dict) and deepspeed_plugin.get("zero_optimization", {}).get("stage") == 3:
        return "DeepSpeed ZeRO-3 partitions the weights"
    if model is not None:
        for parameter in model.parameters():
            if hasattr(parameter, "ds_numel"):
                return "DeepSpeed ZeRO-3 partitions the weights"
            if type(parameter).__name__ in ("DTensor", "FlatParameter") or type(parameter.data).__name__ == "DTensor":
                return "the weights are sharded tensors (FSDP/DTensor)"
    return None


class WeightSpectrumCallback(TrainerCallback):
    """Every ``every_n_steps`` optimizer steps, :func:`weight_spectrum` of the model on rank 0.

    The values are added to the next training log by a trainer with
    :class:`~st_contrast.callbacks.MonitoringMixin` (``report_to``, ``log.jsonl``); choose ``every_n_steps`` a
    multiple of ``logging_steps`` so each computation is logged at its own step. Under ZeRO-3 or FSDP the
    weights are sharded: the callback logs why once and computes nothing.

    Args:
        every_n_steps: interval in optimizer steps.
        patterns: regular expressions selecting ``nn.Linear`` weights by name; None: all of them.
        per_matrix: log each matrix's ratio (default: only when ``patterns`` is given) besides mean and max.
    """

    def __init__(self, every_n_steps: int, patterns: Sequence[str] | None = None, per_matrix: bool | None = None):
        if not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise ValueError(f"every_n_steps must be a positive integer, got {every_n_steps!r}.")
        self.every_n_steps = every_n_steps
        self.patterns = list(patterns) if patterns else None
        self.per_matrix = bool(self.patterns) if per_matrix is None else per_matrix
        self.disabled_reason: str | None = None
        self._pending: dict[str, float] = {}

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.disabled_reason = sharded_parameters_reason(args, model)
        if self.disabled_reason:
            logger.warning("Weight spectrum disabled: %s; no spectrum/* metrics are logged.", self.disabled_reason)
        elif model is not None:
            _selected(model, self.patterns)  # fail at the start on patterns that match nothing

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.disabled_reason or model is None or not state.is_world_process_zero:
            return
        if state.global_step % self.every_n_steps == 0:
            self._pending = weight_spectrum(model, self.patterns, per_matrix=self.per_matrix)

    def metrics_for_log(self, args, state) -> dict[str, float]:
        pending, self._pending = self._pending, {}
        return pending
