"""Splitting a number of batches among datasets in proportion to their weights (no torch, no sentence-transformers:
the streaming readers use it too)."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["allocate_batches"]


def allocate_batches(total: int, weights: Sequence[float]) -> list[int]:
    """``total`` split in proportion to ``weights`` (largest remainder, deterministic)."""
    scaled = [total * weight / sum(weights) for weight in weights]
    counts = [math.floor(value) for value in scaled]
    order = sorted(range(len(weights)), key=lambda i: (counts[i] - scaled[i], i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts
