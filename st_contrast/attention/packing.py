"""Helpers for packed ("padding-free") batches described by ``cu_seqlens``.

A packed batch concatenates every sequence of a batch into one run of ``total_tokens`` tokens.
``cu_seqlens`` holds the cumulative sequence boundaries (``[0, len_0, len_0 + len_1, ...]``), so
sequence ``i`` occupies tokens ``cu_seqlens[i]:cu_seqlens[i + 1]``. These helpers move between
that layout and the padded ``[batch, max_len, ...]`` layout that dense kernels expect.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = [
    "PackedLayout",
    "cu_seqlens_from_lengths",
    "cu_seqlens_from_attention_mask",
    "packed_position_ids",
    "packed_layout",
]


def cu_seqlens_from_lengths(lengths: torch.Tensor) -> torch.Tensor:
    """Cumulative boundaries ``[0, l0, l0 + l1, ...]`` (int32, as varlen kernels expect)."""
    if lengths.ndim != 1:
        raise ValueError(f"lengths must be 1-D, got shape {tuple(lengths.shape)}")
    if lengths.numel() and int(lengths.min()) < 1:
        raise ValueError("every packed sequence needs at least one token")
    cu = torch.zeros(lengths.numel() + 1, dtype=torch.int32, device=lengths.device)
    cu[1:] = torch.cumsum(lengths, dim=0)
    return cu


def cu_seqlens_from_attention_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """``cu_seqlens`` of the real tokens of a padded ``[batch, seq_len]`` mask (any padding side)."""
    return cu_seqlens_from_lengths(attention_mask.sum(dim=-1, dtype=torch.int32))


def packed_position_ids(cu_seqlens: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """Positions that restart at ``offset`` for every packed sequence, shape ``[1, total_tokens]``.

    ``offset`` is ``padding_idx + 1`` for RoBERTa-family learned position tables and 0 otherwise.
    """
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    starts = torch.repeat_interleave(cu_seqlens[:-1].long(), lengths)
    positions = torch.arange(int(cu_seqlens[-1]), device=cu_seqlens.device) - starts
    return (positions + offset).unsqueeze(0)


@dataclass
class PackedLayout:
    """Index maps between a packed run of tokens and its right-padded ``[batch, max_len]`` view.

    Every index has a shape known from ``batch``, ``max_len`` and ``total_tokens`` (no data-dependent
    shapes), so ``torch.compile`` traces the layout and the exact kernel without graph breaks.

    Args:
        cu_seqlens: ``[batch + 1]`` cumulative sequence boundaries.
        max_len: Length of the longest sequence.
        total_tokens: ``cu_seqlens[-1]`` when the caller knows it from a shape (read from ``cu_seqlens`` otherwise).

    Attributes:
        padded_index: ``[batch, max_len]`` packed index of every padded slot (pad slots point at a real
            token of the same row, so every index is in range; :meth:`to_padded` zeroes them).
        valid: ``[batch, max_len]`` True where the slot holds a real token. ``tensor[valid]`` on a
            padded tensor returns its tokens in packed order.
        packed_index: ``[total_tokens]`` flat index (into ``[batch * max_len]``) of every packed token.
        has_padding: Whether any sequence is shorter than ``max_len`` (always True while compiling, where the
            answer would depend on data).
    """

    cu_seqlens: torch.Tensor
    max_len: int
    total_tokens: int | None = None
    padded_index: torch.Tensor = field(init=False)
    valid: torch.Tensor = field(init=False)
    packed_index: torch.Tensor = field(init=False)
    has_padding: bool = field(init=False)
    _masks: dict = field(init=False, default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        device = self.cu_seqlens.device
        starts = self.cu_seqlens[:-1].long()
        lengths = self.cu_seqlens[1:].long() - starts
        offsets = torch.arange(self.max_len, device=device)
        self.valid = offsets.unsqueeze(0) < lengths.unsqueeze(1)
        last = (starts + lengths - 1).unsqueeze(1)
        self.padded_index = torch.minimum(starts.unsqueeze(1) + offsets.unsqueeze(0), last)
        if self.total_tokens is None:
            self.total_tokens = int(self.cu_seqlens[-1])
        tokens = torch.arange(self.total_tokens, device=device)
        rows = torch.searchsorted(self.cu_seqlens[1:].long(), tokens, right=True)
        self.packed_index = rows * self.max_len + tokens - starts[rows]
        self.has_padding = torch.compiler.is_compiling() or bool((lengths != self.max_len).any())

    def to_padded(self, packed: torch.Tensor) -> torch.Tensor:
        """``[total_tokens, ...]`` -> ``[batch, max_len, ...]``, zeros in the pad slots.

        Its backward is :meth:`to_packed` of the gradient (a gather), not the scatter-add that indexing would run.
        """
        return _ToPadded.apply(packed, self.padded_index, self.valid, self.packed_index)

    def to_packed(self, padded: torch.Tensor) -> torch.Tensor:
        """``[batch, max_len, ...]`` -> ``[total_tokens, ...]`` (the pad slots are dropped).

        Its backward is :meth:`to_padded` of the gradient (a gather; the pad slots get zero gradient).
        """
        return _ToPacked.apply(padded, self.padded_index, self.valid, self.packed_index)

    def attention_mask(self, causal: bool, window: tuple[int, int] | None) -> torch.Tensor | None:
        """Boolean SDPA mask ``[batch, 1, max_len, max_len]`` (True = attend), or None if not needed.

        ``window`` is the flash-attention style ``(left, right)`` inclusive window (``-1`` = unbounded).
        Causal attention without a window needs no mask on right-padded rows: a real query never
        reaches the pad slots behind it, so the kernel's ``is_causal`` suffices.
        """
        key = (causal, window)
        if key not in self._masks:
            self._masks[key] = self._build_mask(causal, window)
        return self._masks[key]

    def _build_mask(self, causal: bool, window: tuple[int, int] | None) -> torch.Tensor | None:
        if window is None:
            if causal or not self.has_padding:
                return None
            return self.valid[:, None, None, :]
        left, right = window
        positions = torch.arange(self.max_len, device=self.valid.device)
        distance = positions.unsqueeze(1) - positions.unsqueeze(0)  # query - key
        allowed = torch.ones_like(distance, dtype=torch.bool)
        if left >= 0:
            allowed &= distance <= left
        if causal:
            allowed &= distance >= 0
        elif right >= 0:
            allowed &= -distance <= right
        mask = allowed[None, None] & self.valid[:, None, None, :]
        # Pad query rows may see no key inside their window: let them attend everywhere so the
        # kernel never produces NaN rows (they are dropped by ``to_packed`` anyway).
        return mask | ~self.valid[:, None, :, None]


class _ToPadded(torch.autograd.Function):
    """Packed -> padded with zero pad slots. Every real token has one slot, so the gradient comes back by a gather.

    Plain indexing would differentiate into an accumulating scatter (``index_put_``), serial on CPU and atomic in
    compiled kernels. The layout's two index maps are inverse on the real tokens, so both directions are gathers,
    forward and backward, at any order of differentiation.
    """

    @staticmethod
    def forward(ctx, packed, padded_index, valid, packed_index):
        ctx.save_for_backward(padded_index, valid, packed_index)
        valid_slots = valid.view(*valid.shape, *([1] * (packed.ndim - 1)))
        return packed[padded_index].masked_fill(~valid_slots, 0)

    @staticmethod
    def backward(ctx, grad):
        return _ToPacked.apply(grad, *ctx.saved_tensors), None, None, None


class _ToPacked(torch.autograd.Function):
    """Padded -> packed: the real slots' gradient comes back by a gather (:class:`_ToPadded`), the pad slots get 0."""

    @staticmethod
    def forward(ctx, padded, padded_index, valid, packed_index):
        ctx.save_for_backward(padded_index, valid, packed_index)
        return padded.flatten(0, 1)[packed_index]

    @staticmethod
    def backward(ctx, grad):
        return _ToPadded.apply(grad, *ctx.saved_tensors), None, None, None


_layout_cache: tuple[torch.Tensor, PackedLayout] | None = None


def packed_layout(cu_seqlens: torch.Tensor, max_len: int, total_tokens: int | None = None) -> PackedLayout:
    """The :class:`PackedLayout` of ``cu_seqlens``, reused across the layers of one forward pass.

    Every attention layer of a forward pass receives the same ``cu_seqlens`` tensor object, so the
    last layout is cached by identity (the cache holds that tensor, so its id cannot be recycled).
    While compiling, nothing is cached (the compiler removes the repeated index computations itself).
    """
    global _layout_cache
    if torch.compiler.is_compiling():
        return PackedLayout(cu_seqlens, max_len, total_tokens)
    cached = _layout_cache  # one read: another thread (nn.DataParallel's replicas) may replace it meanwhile
    if cached is not None and cached[0] is cu_seqlens and cached[1].max_len == max_len:
        return cached[1]
    layout = PackedLayout(cu_seqlens, max_len, total_tokens)
    _layout_cache = (cu_seqlens, layout)
    return layout
