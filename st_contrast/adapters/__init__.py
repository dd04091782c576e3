"""Parameter-efficient training for any ``SentenceTransformer``: BitFit, LoRA presets, freezing and locking,
merge-and-save. LoRA comes from peft through transformers' adapter API (what Sentence Transformers' own
``model.add_adapter`` uses), so adapter models save and reload in the standard format. Reloading saved adapters
(:func:`st_contrast.load_adapter_model`, :func:`st_contrast.relink_adapter_base`) lives with the rest of model I/O
in :mod:`st_contrast.model_io`."""

from __future__ import annotations

from st_contrast.adapters.bitfit import apply_bitfit
from st_contrast.adapters.freezing import freeze, lock
from st_contrast.adapters.locked_cache import cache_locked_embeddings
from st_contrast.adapters.lora import LORA_PRESETS, add_lora, linear_layer_names
from st_contrast.adapters.merging import merge_and_save, merge_lora
from st_contrast.adapters.parameters import ParameterCount, count_parameters

__all__ = [
    "LORA_PRESETS",
    "ParameterCount",
    "add_lora",
    "apply_bitfit",
    "cache_locked_embeddings",
    "count_parameters",
    "freeze",
    "linear_layer_names",
    "lock",
    "merge_and_save",
    "merge_lora",
]
