"""Packed batches padded to a few shapes, so that CUDA graphs recorded for one batch replay for the next.

A packed batch's token count, and its longest sequence, change at every step. ``torch.compile`` with dynamic shapes
serves them all with one graph, but CUDA graphs (``mode="reduce-overhead"``) record a graph per concrete shape, and
replay it only when that shape comes back. Here the packed inputs of a compiled backbone are padded before the graph
runs, and its per-token outputs cut back after it, so that a run meets a few dozen shapes instead of one per batch:

- the token count is rounded up to a multiple of 64 up to 1,024 tokens, then to ``m * 2**k`` with ``8 <= m <= 15``
  (at most 12.5% more tokens);
- the added tokens form :data:`FILLER_SEQUENCES` extra sequences of their own (token id 0, the first token's position),
  so the number of sequences grows by a constant and no real token attends to them;
- the longest length is rounded up to a multiple of 64 (the varlen kernels take it as a bound for their grid of
  64-128-row tiles: the tiles past a sequence's end exit at once).

The real tokens' outputs are those of the unpadded batch (copied out of the graph's memory), the filler's gradient is
zero, and nothing happens on the host that waits for the GPU. Only compiled backbones are padded
(:func:`~st_contrast.modules.compile_backbone`).
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["FILLER_SEQUENCES", "bucket_length", "bucket_tokens", "pad_packed_inputs", "cut_packed_outputs"]

FILLER_SEQUENCES = 8
"""Sequences the filler tokens are split into: a constant, so a batch's number of sequences stays a shape that
recurs; enough that each stays shorter than the batch's longest sequence in most batches."""

_CU_SEQLENS = ("cu_seq_lens_q", "cu_seq_lens_k")
_MAX_LENGTHS = ("max_length_q", "max_length_k")


def bucket_tokens(tokens: int) -> int:
    """The padded token count for ``tokens`` real tokens: at least ``tokens + FILLER_SEQUENCES``, a multiple of 64
    up to 1,024, then ``m * 2**k`` with ``8 <= m <= 15``."""
    needed = tokens + FILLER_SEQUENCES
    if needed <= 1024:
        return -(-needed // 64) * 64
    step = 1 << (needed.bit_length() - 4)  # needed is in [8 * step, 16 * step)
    return -(-needed // step) * step


def bucket_length(length: int) -> int:
    """The longest length handed to the attention kernel: ``length`` rounded up to a multiple of 64."""
    return -(-length // 64) * 64


def pad_packed_inputs(inputs: dict[str, Any]) -> tuple[dict[str, Any], int | None]:
    """``inputs`` of a packed forward with filler tokens added up to :func:`bucket_tokens`, and the real token count.

    Every ``[1, tokens, ...]`` tensor gets the filler's values (``position_ids`` the first token's position, ``seq_idx``
    the filler sequence's index, ``labels`` -100, which transformers' losses ignore, anything else zeros),
    ``cu_seq_lens_q`` / ``_k`` the filler sequences' ends and ``max_length_q`` / ``_k`` a bound for them. Inputs that
    are not packed (no ``cu_seq_lens_q``) are returned as they are, with None.
    """
    cu_seqlens = inputs.get("cu_seq_lens_q")
    input_ids = inputs.get("input_ids")
    if cu_seqlens is None or input_ids is None:
        return inputs, None
    tokens = input_ids.shape[1]
    padded = bucket_tokens(tokens)
    filler = padded - tokens
    device = cu_seqlens.device
    pieces = torch.arange(1, FILLER_SEQUENCES + 1, device=device)
    ends = (tokens + pieces * filler // FILLER_SEQUENCES).to(cu_seqlens.dtype)  # the last end is `padded`
    longest_piece = -(-filler // FILLER_SEQUENCES)
    sequences = cu_seqlens.shape[0] - 1
    out = dict(inputs)
    for key, value in inputs.items():
        if key in _CU_SEQLENS and torch.is_tensor(value):
            out[key] = torch.cat([value, ends.to(value.dtype)])
        elif key in _MAX_LENGTHS and value is not None:
            out[key] = bucket_length(max(value, longest_piece))
        elif torch.is_tensor(value) and value.ndim >= 2 and value.shape[:2] == (1, tokens):
            out[key] = torch.cat([value, _filler(key, value, filler, ends - tokens, sequences)], dim=1)
    return out, tokens


def _filler(key: str, value: torch.Tensor, filler: int, piece_ends: torch.Tensor, sequences: int) -> torch.Tensor:
    shape = (1, filler, *value.shape[2:])
    if key == "position_ids":
        return value[:, :1].expand(shape)
    if key == "labels":  # a model computing its own loss (masked LM) must not score the filler
        return value.new_full(shape, -100)
    if key == "seq_idx":
        offsets = torch.arange(filler, device=value.device)
        return (sequences + torch.searchsorted(piece_ends, offsets, right=True)).to(value.dtype)[None]
    return value.new_zeros(shape)


def cut_packed_outputs(outputs: Any, tokens: int, padded: int) -> Any:
    """The model's outputs with every ``[1, padded, ...]`` tensor (hidden states, MLM logits) cut to the real
    ``tokens``, and tuples of them (``hidden_states``) too; every tensor is a copy (CUDA graphs reuse their outputs'
    memory at the next replay, which would overwrite what a cached loss keeps of an earlier mini-batch). ``outputs`` is
    changed in place when it is a mapping."""

    def cut(value: Any) -> Any:
        if isinstance(value, (tuple, list)):
            return type(value)(cut(item) for item in value)
        if not torch.is_tensor(value):
            return value
        if value.ndim >= 3 and value.shape[:2] == (1, padded):
            value = value[:, :tokens]
        return value.clone()

    if hasattr(outputs, "items"):
        for key, value in list(outputs.items()):
            outputs[key] = cut(value)
        return outputs
    return cut(outputs)
