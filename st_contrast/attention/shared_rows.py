"""Several packed sequences per padded row: the layout of the ``block_diagonal`` attention kernel.

The ``sdpa`` kernel's :class:`~st_contrast.attention.packing.PackedLayout` gives every sequence a row of its own,
``max_len`` slots wide, so attention computes ``batch * max_len**2`` scores however short most sequences are (a batch
of ~15-token sentences with one of 60 tokens: four fifths of them padding). :class:`SharedRowsLayout` lays the
sequences, in their packed order, next to each other in rows as wide as the longest one (next fit: a sequence that
does not fit where the current row ends starts the next row), and a block-diagonal mask keeps them apart, so the
batch costs about ``total_tokens * max_len`` scores.

The row of each sequence is worked out on the host, from ``cu_seqlens`` read once per forward pass (a device sync on
a GPU), and the layout is reused by every attention layer of that pass: found by the ``cu_seqlens`` tensor in eager
mode, passed in as keyword arguments to a compiled backbone (worked out before its graph, so the graph holds the
kernel).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from st_contrast.attention.packing import _ToPacked, _ToPadded

__all__ = ["SHARED_ROWS_KWARGS", "SharedRowsLayout", "shared_rows_layout"]

SHARED_ROWS_KWARGS = ("shared_rows_packed_index", "shared_rows_padded_index", "shared_rows_segment")
"""The keyword arguments that carry a :class:`SharedRowsLayout` through a transformers model to its attention."""


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

    Built from ``cu_seqlens`` by :meth:`from_cu_seqlens` (on the host). A compiled backbone
    (:func:`~st_contrast.modules.compile_backbone`) builds it before its graph and hands it to every attention layer as
    keyword arguments (:meth:`as_kwargs`, :meth:`from_kwargs`), so the kernel is traced into the graph.

    Args:
        packed_index: ``[total_tokens]`` flat slot index (into ``[rows * width]``) of every packed token.
        padded_index: ``[rows, width]`` packed index of every slot's token (pad slots hold 0 and are zeroed).
        segment: ``[rows, width]`` the sequence each slot belongs to, -1 for pad slots.
        one_sequence_per_row: No row holds two sequences (the layout is then the ``sdpa`` kernel's, mask included).

    Example:
        ::

            layout = SharedRowsLayout.from_cu_seqlens(cu_seqlens_from_lengths(torch.tensor([3, 1, 4, 2])))
            layout.rows, layout.width  # (3, 4): [3, 1], [4], [2]
    """

    packed_index: torch.Tensor
    padded_index: torch.Tensor
    segment: torch.Tensor
    one_sequence_per_row: bool = False
    valid: torch.Tensor = field(init=False)
    _masks: dict = field(init=False, default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.valid = self.segment >= 0

    @classmethod
    def from_cu_seqlens(cls, cu_seqlens: torch.Tensor) -> SharedRowsLayout:
        """The layout of the packed batch ``cu_seqlens`` (``[batch + 1]`` cumulative lengths, any device), its rows
        as wide as its longest sequence; the index tensors are made on the host and moved to ``cu_seqlens``' device."""
        bounds = cu_seqlens.long().cpu()
        lengths = bounds.diff()
        width = int(lengths.max())
        slot_starts, rows = next_fit_starts(lengths.tolist(), width)
        total = int(bounds[-1])
        sequence = torch.repeat_interleave(torch.arange(len(lengths)), lengths, output_size=total)
        tokens = torch.arange(total)
        packed_index = torch.tensor(slot_starts)[sequence] + tokens - bounds[:-1][sequence]
        segment = torch.full((rows * width,), -1).scatter(0, packed_index, sequence)
        padded_index = torch.zeros(rows * width, dtype=torch.long).scatter(0, packed_index, tokens)
        device = cu_seqlens.device
        return cls(
            packed_index.to(device),
            padded_index.view(rows, width).to(device),
            segment.view(rows, width).to(device),
            one_sequence_per_row=rows == len(lengths),
        )

    @property
    def rows(self) -> int:
        return self.segment.shape[0]

    @property
    def width(self) -> int:
        """Slots per row: the longest sequence's length."""
        return self.segment.shape[1]

    def as_kwargs(self) -> dict[str, torch.Tensor]:
        """The layout as keyword arguments of a transformers model's forward, which hands them to every attention
        layer (as it does ``cu_seq_lens_q``)."""
        return dict(zip(SHARED_ROWS_KWARGS, (self.packed_index, self.padded_index, self.segment), strict=True))

    @classmethod
    def from_kwargs(cls, kwargs: dict) -> SharedRowsLayout | None:
        """The layout :meth:`as_kwargs` put into an attention layer's keyword arguments, or None."""
        if SHARED_ROWS_KWARGS[0] not in kwargs:
            return None
        return cls(*(kwargs[name] for name in SHARED_ROWS_KWARGS))

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
                    mask = mask & (distance <= left)
                if causal:
                    mask = mask & (distance >= 0)
                elif right >= 0:
                    mask = mask & (-distance <= right)
            self._masks[key] = mask.unsqueeze(1)
        return self._masks[key]


_layout_cache: tuple[torch.Tensor, SharedRowsLayout] | None = None


def shared_rows_layout(cu_seqlens: torch.Tensor) -> SharedRowsLayout:
    """The :class:`SharedRowsLayout` of ``cu_seqlens``, built once per forward pass: every attention layer of a pass
    receives the same ``cu_seqlens`` tensor object, so the last layout is reused by identity (the cache holds that
    tensor, so its id cannot be recycled)."""
    global _layout_cache
    cached = _layout_cache  # one read: another thread (nn.DataParallel's replicas) may replace it meanwhile
    if cached is not None and cached[0] is cu_seqlens:
        return cached[1]
    layout = SharedRowsLayout.from_cu_seqlens(cu_seqlens)
    _layout_cache = (cu_seqlens, layout)
    return layout
