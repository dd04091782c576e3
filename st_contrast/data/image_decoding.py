"""Decoding the image references of a batch to PIL images on a few threads (no sentence-transformers import: the
streaming benchmarks time it alone)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from st_contrast.data.images import decode_image, is_image_reference

__all__ = ["decode_rows"]

_MAX_THREADS = 8


def _default_threads() -> int:
    """Threads to decode a batch with: a few in the main process (streams, ``dataloader_num_workers: 0``), one in a
    data-loader worker (the workers already run in parallel)."""
    from torch.utils.data import get_worker_info

    return 1 if get_worker_info() is not None else max(1, min(_MAX_THREADS, os.cpu_count() or 1))


def decode_rows(rows: list[dict[str, Any]], threads: int | None = None) -> list[dict[str, Any]]:
    """``rows`` with every image reference decoded to an RGB PIL image (:func:`~st_contrast.data.images.decode_image`),
    on ``threads`` threads (default: up to 8 in the main process, 1 in a data-loader worker): Pillow releases the GIL
    while it decodes. Rows without references come back unchanged.

    Raises:
        DataError: A missing or corrupt image; the message names the image and its data file and row.
    """
    cells = [(index, key, value) for index, row in enumerate(rows) for key, value in row.items()]
    images = [(index, key, value) for index, key, value in cells if is_image_reference(value)]
    if not images:
        return rows
    threads = _default_threads() if threads is None else threads
    if threads > 1 and len(images) > 1:
        with ThreadPoolExecutor(max_workers=min(threads, len(images))) as pool:
            decoded = list(pool.map(lambda cell: decode_image(cell[2], cell[1]), images))
    else:
        decoded = [decode_image(value, key) for _, key, value in images]
    out = [dict(row) for row in rows]
    for (index, key, _), image in zip(images, decoded, strict=True):
        out[index][key] = image
    return out
