"""The data collator that decodes the image references of a batch before Sentence Transformers preprocesses it."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sentence_transformers.sentence_transformer.data_collator import SentenceTransformerDataCollator

from st_contrast.data.images import decode_image, is_image_reference

__all__ = ["ImageTextDataCollator", "decode_rows"]

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


@dataclass
class ImageTextDataCollator(SentenceTransformerDataCollator):
    """Sentence Transformers' collator, with the image references of each batch decoded to PIL images first.

    Datasets from :func:`~st_contrast.data.load_dataset_spec` hold references to images, not images (see
    :mod:`st_contrast.data.images`), so only the images of the current batch are ever decoded: on a few threads in
    the main process (a stream, or ``dataloader_num_workers: 0``), in the data loader's workers when it has some
    (:func:`decode_rows`). The model's own processor then resizes and normalises them (ST's ``Transformer``);
    nothing here preprocesses pixels. A missing or corrupt image raises a :class:`~st_contrast.data.DataError` that
    names the image and its data file and row. Rows without references pass through unchanged, so the collator
    serves text-only data too. :class:`~st_contrast.ContrastiveTrainer` uses it by default.

    Args:
        decode_threads: Threads that decode a batch's images; ``None``: up to 8 in the main process, 1 in a
            data-loader worker.

    Example:
        ::

            from sentence_transformers import SentenceTransformerTrainer

            from st_contrast.data import ImageTextDataCollator, load_dataset_spec

            data = load_dataset_spec({"name": "digits", "path": "digits/train.jsonl", "image_columns": ["image"],
                                      "columns": ["image", "caption"]})
            collator = ImageTextDataCollator(preprocess_fn=model.preprocess)
            trainer = SentenceTransformerTrainer(model=model, train_dataset=data, loss=loss, data_collator=collator)
    """

    decode_threads: int | None = None

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        if features and any(is_image_reference(value) for value in features[0].values()):
            features = decode_rows(features, self.decode_threads)
        return super().__call__(features)
