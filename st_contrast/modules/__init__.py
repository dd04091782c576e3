"""Sentence Transformers modules. Their import paths are part of the saved-model format
(``modules.json`` stores ``module.Class``): keep them stable."""

from __future__ import annotations

from st_contrast.modules.flash_transformer import SUPPORTED_MODEL_TYPES, FlashTransformer
from st_contrast.modules.temperature import LogitScale

__all__ = ["FlashTransformer", "LogitScale", "SUPPORTED_MODEL_TYPES"]
