"""The data collator that decodes the image references of a batch before Sentence Transformers preprocesses it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sentence_transformers.sentence_transformer.data_collator import SentenceTransformerDataCollator

from st_contrast.data.image_decoding import decode_rows
from st_contrast.data.images import is_image_reference

__all__ = ["ImageTextDataCollator"]


@dataclass
class ImageTextDataCollator(SentenceTransformerDataCollator):
    """Sentence Transformers' collator, with the image references of each batch decoded to PIL images first.

    Datasets from :func:`~st_contrast.data.load_dataset_spec` hold references to images, not images (see
    :mod:`st_contrast.data.images`), so only the images of the current batch are ever decoded: on a few threads in
    the main process (a stream, or ``dataloader_num_workers: 0``), in the data loader's workers when it has some
    (:func:`~st_contrast.data.image_decoding.decode_rows`). The model's own processor then resizes and normalises
    them (ST's ``Transformer``); nothing here preprocesses pixels. A missing or corrupt image raises a
    :class:`~st_contrast.data.DataError` that names the image and its data file and row. Rows without references pass
    through unchanged, so the collator serves text-only data too. :class:`~st_contrast.ContrastiveTrainer` uses it by
    default.

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
