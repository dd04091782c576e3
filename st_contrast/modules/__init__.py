"""Sentence Transformers modules. Their import paths are part of the saved-model format
(``modules.json`` stores ``module.Class``): keep them stable."""

from __future__ import annotations

from st_contrast.modules.bidirectional import (
    BidirectionalFlashTransformer,
    BidirectionalTransformer,
    is_bidirectional,
    set_causal,
)
from st_contrast.modules.flash_transformer import SUPPORTED_MODEL_TYPES, FlashTransformer
from st_contrast.modules.instruction_pooling import InstructionPooling
from st_contrast.modules.temperature import LogitScale

__all__ = [
    "BidirectionalFlashTransformer",
    "BidirectionalTransformer",
    "FlashTransformer",
    "InstructionPooling",
    "LogitScale",
    "SUPPORTED_MODEL_TYPES",
    "is_bidirectional",
    "set_causal",
]
