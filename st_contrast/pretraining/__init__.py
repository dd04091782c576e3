"""Masked pretraining: MNTP for decoders (LLM2Vec step 2) and MLM for encoders, LoRA or full, via ``Trainer``."""

from __future__ import annotations

from st_contrast.pretraining.masking import MASK_SCHEMES, MaskingCollator, pack_masked_batch, set_mask_token
from st_contrast.pretraining.models import is_packed_model, load_mlm_model, load_mntp_model, packed_position_offset
from st_contrast.pretraining.training import SAVE_MODES, save_pretrained_model, tokenize_texts, train_masked_lm

__all__ = [
    "MASK_SCHEMES",
    "SAVE_MODES",
    "MaskingCollator",
    "is_packed_model",
    "load_mlm_model",
    "load_mntp_model",
    "pack_masked_batch",
    "packed_position_offset",
    "save_pretrained_model",
    "set_mask_token",
    "tokenize_texts",
    "train_masked_lm",
]
