"""Masked pretraining: MNTP for decoders (LLM2Vec step 2) and MLM for encoders, LoRA or full, via ``Trainer``."""

from __future__ import annotations

from st_contrast.pretraining.masking import MASK_SCHEMES, MaskingCollator, set_mask_token
from st_contrast.pretraining.models import load_mlm_model, load_mntp_model
from st_contrast.pretraining.training import SAVE_MODES, save_pretrained_model, tokenize_texts, train_masked_lm

__all__ = [
    "MASK_SCHEMES",
    "SAVE_MODES",
    "MaskingCollator",
    "load_mlm_model",
    "load_mntp_model",
    "save_pretrained_model",
    "set_mask_token",
    "tokenize_texts",
    "train_masked_lm",
]
