"""LLM2Vec: decoder LLMs as text encoders (bidirectional attention, MNTP, SimCSE, supervised contrastive).

The tokenization helpers load eagerly; the recipe helpers load on first use (they import the
modules, which import the tokenization from here).
"""

from __future__ import annotations

import importlib
from typing import Any

from st_contrast.llm2vec.tokenization import SGPT_BRACKETS, EmbeddingTokenizer, EncodedTexts, collate_ids

_LAZY = {"llm2vec_model": "st_contrast.llm2vec.recipes"}

__all__ = ["SGPT_BRACKETS", "EmbeddingTokenizer", "EncodedTexts", "collate_ids", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'st_contrast.llm2vec' has no attribute {name!r}")
