"""Packed (``cu_seqlens``) attention: layout helpers, varlen kernels and their transformers registration."""

from __future__ import annotations

from st_contrast.attention.backends import (
    ATTENTION_BACKENDS,
    BACKEND_ALIASES,
    available_backends,
    block_diagonal_attention,
    canonical_backend_name,
    flash_attn_varlen_attention,
    resolve_backend,
    sdpa_varlen_attention,
    torch_varlen_attention,
)
from st_contrast.attention.interface import (
    attention_implementation_name,
    packed_attention_forward,
    register_packed_attention,
)
from st_contrast.attention.packing import (
    PackedLayout,
    cu_seqlens_from_attention_mask,
    cu_seqlens_from_lengths,
    packed_position_ids,
)
from st_contrast.attention.shared_rows import SharedRowsLayout

__all__ = [
    "ATTENTION_BACKENDS",
    "BACKEND_ALIASES",
    "canonical_backend_name",
    "PackedLayout",
    "SharedRowsLayout",
    "block_diagonal_attention",
    "attention_implementation_name",
    "available_backends",
    "cu_seqlens_from_attention_mask",
    "cu_seqlens_from_lengths",
    "flash_attn_varlen_attention",
    "packed_attention_forward",
    "packed_position_ids",
    "register_packed_attention",
    "resolve_backend",
    "sdpa_varlen_attention",
    "torch_varlen_attention",
]
