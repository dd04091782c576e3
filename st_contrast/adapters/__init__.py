"""Parameter-efficient training for any ``SentenceTransformer``: BitFit, LoRA presets, freezing and
locking, merge-and-save, and SGPT recipes. LoRA comes from peft through transformers' adapter API."""

from __future__ import annotations

from st_contrast.adapters.backbones import backbone_models, hidden_layers
from st_contrast.adapters.bitfit import apply_bitfit
from st_contrast.adapters.freezing import freeze, lock
from st_contrast.adapters.lora import LORA_PRESETS, add_lora, linear_layer_names
from st_contrast.adapters.merging import merge_and_save, merge_lora
from st_contrast.adapters.parameters import ParameterCount, count_parameters
from st_contrast.adapters.recipes import asymmetric_model, linear_stack, sgpt_bitfit_model
from st_contrast.adapters.saving import adapter_bases, check_adapter_bases, load_adapter_model, relink_adapter_base

__all__ = [
    "LORA_PRESETS",
    "ParameterCount",
    "adapter_bases",
    "add_lora",
    "apply_bitfit",
    "asymmetric_model",
    "backbone_models",
    "check_adapter_bases",
    "count_parameters",
    "freeze",
    "hidden_layers",
    "linear_layer_names",
    "linear_stack",
    "load_adapter_model",
    "lock",
    "merge_and_save",
    "merge_lora",
    "relink_adapter_base",
    "sgpt_bitfit_model",
]
