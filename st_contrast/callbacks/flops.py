"""Model FLOPs per token and model FLOPs utilisation (MFU).

MFU is the fraction of the hardware's peak throughput that the *model's* arithmetic uses: the FLOPs a
forward and backward pass of the backbone needs for the real (non-padding) tokens seen, divided by the
elapsed time and by the peak FLOPs of the devices. Recomputation, padding and attention kernels'
overheads do not count, so MFU compares fairly across implementations (PaLM, appendix B).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

__all__ = [
    "FlopsEstimate",
    "PEAK_FLOPS",
    "estimate_flops",
    "model_flops_utilization",
    "peak_flops_per_device",
    "training_flops_per_token",
    "training_precision",
]

# Dense (no sparsity) peak FLOPs per device, from NVIDIA's data sheets. Matched against
# torch.cuda.get_device_name() in this order: the first key found in the upper-cased name wins.
PEAK_FLOPS: dict[str, dict[str, float]] = {
    "H200 NVL": {"bf16": 835.5e12, "tf32": 417.5e12, "fp32": 60.0e12},
    "H200": {"bf16": 989.4e12, "tf32": 494.7e12, "fp32": 66.9e12},  # SXM
    "H100 PCIE": {"bf16": 756.0e12, "tf32": 378.0e12, "fp32": 51.2e12},
    "H100 NVL": {"bf16": 835.0e12, "tf32": 417.5e12, "fp32": 60.0e12},
    "H100": {"bf16": 989.4e12, "tf32": 494.7e12, "fp32": 66.9e12},  # SXM5
    "A100": {"bf16": 312.0e12, "tf32": 156.0e12, "fp32": 19.5e12},
}


def training_flops_per_token(non_embedding_params: int, num_layers: int, hidden_size: int, seq_len: float) -> float:
    """Training (forward + backward) FLOPs per token of a transformer: ``6 N + 12 L d s``.

    ``6 N``: every non-embedding weight does one multiply-add (2 FLOPs) per token in the forward pass
    and two in the backward pass (input and weight gradients). ``12 L d s``: the attention score and
    value products, ``2 * 2 * s * d`` FLOPs per token and layer forward, times 3 with the backward pass.
    This is the formula of PaLM (Chowdhery et al., 2022, appendix B) and of Megatron-LM's MFU
    (Narayanan et al., 2021), without a causal discount: embedding models attend bidirectionally.

    Args:
        non_embedding_params: ``N``, parameters of the backbone without its embedding tables.
        num_layers: ``L``, transformer layers.
        hidden_size: ``d``, model width (heads * head dimension).
        seq_len: ``s``, the sequence length the token attends over. For a batch of sequences of
            lengths ``s_i``, the token-weighted mean ``sum(s_i ** 2) / sum(s_i)`` gives the exact total.
    """
    return 6.0 * non_embedding_params + 12.0 * num_layers * hidden_size * seq_len


@dataclass(frozen=True)
class FlopsEstimate:
    """What the FLOPs of a backbone depend on; see :func:`training_flops_per_token`."""

    non_embedding_params: int
    num_layers: int
    hidden_size: int

    def flops_per_token(self, seq_len: float) -> float:
        return training_flops_per_token(self.non_embedding_params, self.num_layers, self.hidden_size, seq_len)

    def training_flops(self, tokens: float, sum_squared_lengths: float) -> float:
        """Exact total for sequences with ``sum(s_i) = tokens`` and ``sum(s_i ** 2) = sum_squared_lengths``."""
        return (
            6.0 * self.non_embedding_params * tokens + 12.0 * self.num_layers * self.hidden_size * sum_squared_lengths
        )

    def to_dict(self) -> dict[str, int]:
        return {
            "non_embedding_params": self.non_embedding_params,
            "num_layers": self.num_layers,
            "hidden_size": self.hidden_size,
        }


def _find_backbone(model: nn.Module) -> nn.Module:
    """The Hugging Face model inside a SentenceTransformer (first module with ``auto_model``), or the model itself
    when it is one (a SentenceTransformer also has a ``config``: its backbone's, but its parameters are all of its
    modules')."""
    from transformers import PreTrainedModel

    if isinstance(model, PreTrainedModel):
        return model
    for module in model.modules():
        inner = getattr(module, "auto_model", None)
        if isinstance(inner, nn.Module) and hasattr(getattr(inner, "config", None), "num_hidden_layers"):
            return inner
    raise ValueError(
        f"Cannot find a transformer backbone (a module with a config with num_hidden_layers) in "
        f"{type(model).__name__}. Pass flops_per_token= or peak_flops=None to skip MFU."
    )


def estimate_flops(model: nn.Module) -> FlopsEstimate:
    """The :class:`FlopsEstimate` of a SentenceTransformer's backbone (or of a Hugging Face model).

    ``N`` counts the backbone's parameters without its ``nn.Embedding`` tables and without a ``pooler``
    (BERT/RoBERTa's pooler runs on one token per sequence and ST does not use it). Modules after the
    backbone (pooling, ``Dense``) run once per sequence and are left out. With a ``Router``, the first
    backbone is counted. ``L`` and ``d`` come from the backbone config.
    """
    backbone = _find_backbone(model)
    config = backbone.config
    skipped: set[int] = set()
    for name, module in backbone.named_modules():
        if isinstance(module, nn.Embedding) or name.split(".")[-1] == "pooler":
            skipped.update(id(p) for p in module.parameters())
    seen: set[int] = set()
    params = 0
    for parameter in backbone.parameters():
        if id(parameter) in skipped or id(parameter) in seen:
            continue
        seen.add(id(parameter))
        params += getattr(parameter, "ds_numel", parameter.numel())
    return FlopsEstimate(params, int(config.num_hidden_layers), int(config.hidden_size))


def training_precision(args: Any) -> str:
    """``"bf16"`` for bf16/fp16 training, else ``"tf32"`` when float32 matmuls may use TF32, else ``"fp32"``."""
    if getattr(args, "bf16", False) or getattr(args, "fp16", False):
        return "bf16"
    if torch.get_float32_matmul_precision() != "highest" or getattr(args, "tf32", None):
        return "tf32"
    return "fp32"


def peak_flops_per_device(device: torch.device | str | None = None, precision: str = "bf16") -> float | None:
    """Dense peak FLOPs of one device for ``precision`` (``"bf16"``, ``"tf32"``, ``"fp32"``) from :data:`PEAK_FLOPS`.

    Returns None for CPUs and for GPUs not in the table (H100, H200 and A100 are known): pass the
    figure yourself, e.g. ``enable_monitoring(trainer, peak_flops=181e12)``.
    """
    if precision not in ("bf16", "tf32", "fp32"):
        raise ValueError(f"precision must be 'bf16', 'tf32' or 'fp32', not {precision!r}.")
    device = torch.device(device) if device is not None else None
    if device is not None and device.type != "cuda":
        return None
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(device).upper()
    for key, peaks in PEAK_FLOPS.items():
        if key in name:
            return peaks[precision]
    return None


def model_flops_utilization(flops: float, seconds: float, peak_flops: float, num_devices: int = 1) -> float:
    """``flops / seconds / (peak_flops * num_devices)``: the share of the devices' peak the model used."""
    if seconds <= 0 or peak_flops <= 0:
        raise ValueError(f"seconds and peak_flops must be positive, got {seconds} and {peak_flops}.")
    return flops / seconds / (peak_flops * num_devices)
