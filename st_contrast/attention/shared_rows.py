"""Several packed sequences per padded row: the layout of the ``block_diagonal`` attention kernel.

The ``sdpa`` kernel's :class:`~st_contrast.attention.packing.PackedLayout` gives every sequence a row of its own,
``max_len`` slots wide, so attention computes ``batch * max_len**2`` scores however short most sequences are (a batch
of ~15-token sentences with one of 60 tokens: four fifths of them padding). :class:`SharedRowsLayout` lays the
sequences, in their packed order, next to each other in rows as wide as the longest one (next fit: a sequence that
does not fit where the current row ends starts the next row), and a block-diagonal mask keeps them apart, so the
batch costs about ``total_tokens * max_len`` scores.

The row of each sequence is worked out on the host, from ``cu_seqlens`` read once per forward pass (a device sync on
a GPU), and the layout is reused by every attention layer of that pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from st_contrast.attention.packing import _ToPacked, _ToPadded

__all__ = ["SharedRowsLayout", "shared_rows_layout"]


def next_fit_starts(lengths: list[int], width: int) -> tuple[list[int], int]:
    """The slot (``row * width + offset``) where each sequence starts when the sequences fill rows of ``width`` slots
    in order, and the number of rows."""
    starts, row, fill = [], 0, 0
    for length in lengths:
        if fill + length > width:
            row, fill = row + 1, 0
        starts.append(row * width + fill)
        fill += length
    return starts, row + 1


@dataclass
class SharedRowsLayout:
    """Where each token of a packed batch sits in rows shared by several sequences, and back.

    Args:
        cu_seqlens: ``[batch + 1]`` cumulative sequence lengths of the packed batch (any device).

    Attributes:
        width: Slots per row: the longest sequence's length.
        rows: Number of rows.
        padded_index: ``[rows, width]`` packed index of every slot's token (pad slots hold 0 and are zeroed).
        valid: ``[rows, width]`` True where the slot holds a real token.
        packed_index: ``[total_tokens]`` flat slot index (into ``[rows * width]``) of every packed token.
        segment: ``[rows, width]`` the sequence each slot belongs to, -1 for pad slots.

    Example:
        ::

            layout = SharedRowsLayout(cu_seqlens_from_lengths(torch.tensor([3, 1, 4, 2])))
            layout.rows, layout.width  # (3, 4): [3, 1], [4], [2]
    """

    cu_seqlens: torch.Tensor
    width: int = field(init=False)
    rows: int = field(init=False)
    padded_index: torch.Tensor = field(init=False)
    valid: torch.Tensor = field(init=False)
    packed_index: torch.Tensor = field(init=False)
    segment: torch.Tensor = field(init=False)
    _masks: dict = field(init=False, default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        bounds = self.cu_seqlens.long().cpu()
        lengths = bounds.diff()
        self.width = int(lengths.max())
        slot_starts, self.rows = next_fit_starts(lengths.tolist(), self.width)
        total = int(bounds[-1])
        sequence = torch.repeat_interleave(torch.arange(len(lengths)), lengths, output_size=total)
        tokens = torch.arange(total)
        packed_index = torch.tensor(slot_starts)[sequence] + tokens - bounds[:-1][sequence]
        slots = self.rows * self.width
        segment = torch.full((slots,), -1).scatter(0, packed_index, sequence)
        padded_index = torch.zeros(slots, dtype=torch.long).scatter(0, packed_index, tokens)
        device = self.cu_seqlens.device
        self.packed_index = packed_index.to(device)
        self.segment = segment.view(self.rows, self.width).to(device)
        self.padded_index = padded_index.view(self.rows, self.width).to(device)
        self.valid = self.segment >= 0

    @property
    def one_sequence_per_row(self) -> bool:
        """Whether no row holds two sequences (the layout is then the ``sdpa`` kernel's, mask included)."""
        return self.rows == self.cu_seqlens.numel() - 1

    def to_padded(self, packed: torch.Tensor) -> torch.Tensor:
        """``[total_tokens, ...]`` -> ``[rows, width, ...]``, zeros in the pad slots (its backward is a gather)."""
        return _ToPadded.apply(packed, self.padded_index, self.valid, self.packed_index)

    def to_packed(self, padded: torch.Tensor) -> torch.Tensor:
        """``[rows, width, ...]`` -> ``[total_tokens, ...]`` (its backward is a gather; pad slots get zero gradient)."""
        return _ToPacked.apply(padded, self.padded_index, self.valid, self.packed_index)

    def attention_mask(self, causal: bool, window: tuple[int, int] | None) -> torch.Tensor:
        """Boolean SDPA mask ``[rows, 1, width, width]`` (True = attend): a query sees the keys of its own sequence,
        those before it if ``causal``, those within the flash-attention style ``(left, right)`` ``window`` (``-1``:
        unbounded). A sequence's slots are contiguous, so distances between slots are distances between positions.
        Pad slots attend each other (every query row keeps its diagonal: no NaN rows)."""
        key = (causal, window)
        if key not in self._masks:
            mask = self.segment.unsqueeze(2) == self.segment.unsqueeze(1)
            if causal or window is not None:
                slots = torch.arange(self.width, device=mask.device)
                distance = slots.unsqueeze(1) - slots.unsqueeze(0)  # query - key
                left, right = window if window is not None else (-1, -1)
                if left >= 0:
                    mask &= distance <= left
                if causal:
                    mask &= distance >= 0
                elif right >= 0:
                    mask &= -distance <= right
            self._masks[key] = mask.unsqueeze(1)
        return self._masks[key]


_layout_cache: tuple[torch.Tensor, SharedRowsLayout] | None = None


def shared_rows_layout(cu_seqlens: torch.Tensor) -> SharedRowsLayout:
    """The :class:`SharedRowsLayout` of ``cu_seqlens``, built once per forward pass: every attention layer of a pass
    receives the same ``cu_seqlens`` tensor object, so the last layout is reused by identity (the cache holds that
    tensor, so its id cannot be recycled)."""
    global _layout_cache
    if _layout_cache is None or _layout_cache[0] is not cu_seqlens:
        _layout_cache = (cu_seqlens, SharedRowsLayout(cu_seqlens))
    return _layout_cache[1]
