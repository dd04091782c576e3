"""Sentence Transformers modules and the run-time modes st_contrast puts on them.

Packing (:func:`enable_packing`, :class:`FlashTransformer`) and bidirectional attention (:func:`set_causal`) are
modes of Sentence Transformers' own ``Transformer``: a model saved while they are on is a plain Sentence
Transformers model. The module classes defined here are saved under their import paths (``modules.json`` stores
``module.Class``): keep those paths stable.
"""

from __future__ import annotations

from st_contrast.modules.backbones import backbone_models, hidden_layers
from st_contrast.modules.bidirectional import (
    BidirectionalFlashTransformer,
    BidirectionalTransformer,
    is_bidirectional,
    set_causal,
)
from st_contrast.modules.compilation import compile_backbone, is_compiled, uncompile_backbone
from st_contrast.modules.embedding_tokenizer import SGPT_BRACKETS, EmbeddingTokenizer, EncodedTexts, collate_ids
from st_contrast.modules.flash_transformer import FlashTransformer, to_flash
from st_contrast.modules.instruction_pooling import InstructionPooling
from st_contrast.modules.leak_probe import BidirectionalityError, LeakProbe, check_bidirectional, probe_attention
from st_contrast.modules.packing import (
    SUPPORTED_MODEL_TYPES,
    attention_backend,
    can_pack,
    disable_packing,
    enable_packing,
    is_packed,
    packing_refusal,
    resolved_attention_backend,
    set_attention_backend,
)
from st_contrast.modules.temperature import LogitScale

__all__ = [
    "SGPT_BRACKETS",
    "SUPPORTED_MODEL_TYPES",
    "BidirectionalFlashTransformer",
    "BidirectionalityError",
    "BidirectionalTransformer",
    "EmbeddingTokenizer",
    "EncodedTexts",
    "FlashTransformer",
    "InstructionPooling",
    "LeakProbe",
    "LogitScale",
    "attention_backend",
    "backbone_models",
    "can_pack",
    "check_bidirectional",
    "collate_ids",
    "compile_backbone",
    "disable_packing",
    "enable_packing",
    "hidden_layers",
    "is_bidirectional",
    "is_compiled",
    "is_packed",
    "packing_refusal",
    "probe_attention",
    "resolved_attention_backend",
    "set_attention_backend",
    "set_causal",
    "to_flash",
    "uncompile_backbone",
]
