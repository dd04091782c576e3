"""Read an image-text evaluation file (JSON Lines, CSV, parquet..., a tar shard) whose image column holds images."""

from __future__ import annotations

from pathlib import Path

from st_contrast.data import DataError, decode_image, load_dataset_spec
from st_contrast.evaluation.errors import DataFormatError

__all__ = ["read_image_file"]


def read_image_file(path: str | Path, image_column: str, other_column: str) -> tuple[list, list[str]]:
    """The decoded images (RGB PIL) and the ``other_column`` values (captions or labels), in file order.

    Image paths are relative to the file's folder (the training data's layout, see ``image_columns`` of
    :class:`~st_contrast.data.DatasetSpec`); a webdataset ``.tar`` shard gives ``image``, ``text`` and its ``.json``
    fields as columns. Evaluation sets are small, so the images are decoded now: a missing or
    corrupt image is reported before any model runs.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DataFormatError: A missing column, an empty value, or an image that is missing or cannot be decoded; the
            message names the file and row.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image evaluation file not found: {path}")
    spec = {
        "name": path.stem,
        "path": str(path),
        "columns": [image_column, other_column],
        "image_columns": [image_column],
    }
    try:
        rows = load_dataset_spec(spec)
        images = [decode_image(reference, image_column) for reference in rows[image_column]]
    except DataError as error:
        raise DataFormatError(path, str(error)) from None
    return images, list(rows[other_column])
