"""Image columns of training data: lazy references in the dataset, decoded per batch with errors naming file and row.

A dataset never holds decoded images. Each image cell becomes an *image reference*, a small struct that says where
the encoded image is (a file, a URL, a byte range of a tar shard, or the encoded bytes themselves) and where the row
came from. :func:`decode_image` opens it when a batch is collated (see
:class:`~st_contrast.data.ImageTextDataCollator`); a missing or corrupt image raises a
:class:`~st_contrast.data.DataError` that names the image and the data row.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import posixpath
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets

from st_contrast.data.columns import BadRowError, DataError
from st_contrast.data.urls import is_url, reading, register_storage_options, url_filesystem

__all__ = [
    "IMAGE_REFERENCE",
    "checked_image",
    "decode_image",
    "image_identity",
    "image_reference",
    "is_image_reference",
    "portable_reference",
    "reference_image_columns",
    "register_image_storage",
    "restored_reference",
    "usable_image",
]

IMAGE_REFERENCE = datasets.Features(
    {
        "image_path": datasets.Value("string"),
        "image_bytes": datasets.Value("binary"),
        "offset": datasets.Value("int64"),
        "size": datasets.Value("int64"),
        "row": datasets.Value("string"),
    }
)
"""The Arrow type of an image cell: ``image_path`` (a file, or the tar shard holding the image at ``offset`` with
``size`` bytes), or ``image_bytes`` (encoded PNG/JPEG...), and ``row``: the data file and row, for error messages."""


def image_reference(value: Any, base_dir: str | Path | None, where: str, column: str) -> dict[str, Any]:
    """The reference of one image cell: a path (relative to ``base_dir``, a folder or the URL of one), a URL
    (``s3://``, ``gs://``, ``https://``..., credentials from the environment), encoded bytes, a PIL image, or a
    ``{"bytes", "path"}`` dict (a ``datasets.Image`` cell). A missing local file or a value that is no image is a
    :class:`DataError` naming ``where`` (the data file and row); a URL is only read, and so checked, when its batch
    is built (no request per row up front)."""
    reference = {"image_path": None, "image_bytes": None, "offset": None, "size": None, "row": where}
    if isinstance(value, Mapping) and ("bytes" in value or "path" in value):
        if value.get("bytes"):
            reference["image_bytes"] = bytes(value["bytes"])
            return reference
        value = value.get("path")
    if isinstance(value, (bytes, bytearray)) and value:
        reference["image_bytes"] = bytes(value)
        return reference
    if hasattr(value, "save") and hasattr(value, "mode"):  # a PIL image: stored encoded, as datasets.Image does
        buffer = io.BytesIO()
        value.save(buffer, format="PNG")
        reference["image_bytes"] = buffer.getvalue()
        return reference
    if isinstance(value, str) and is_url(value.strip()):
        reference["image_path"] = value.strip()
        return reference
    if isinstance(value, (str, os.PathLike)) and str(value).strip() and base_dir is not None and is_url(str(base_dir)):
        if not os.path.isabs(str(value)):  # beside a table at a URL: read, and so checked, when its batch is built
            reference["image_path"] = posixpath.join(str(base_dir).rstrip("/"), str(value).strip())
            return reference
    if isinstance(value, (str, os.PathLike)) and str(value).strip():
        path = Path(os.path.expanduser(str(value)))
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        if not path.is_file():
            raise DataError(
                f"{where}: column {column!r}: image file {str(path)!r} does not exist. Fix or remove the row."
            )
        reference["image_path"] = str(path)
        return reference
    shown = "null" if value is None else f"a {type(value).__name__}"
    raise DataError(
        f"{where}: column {column!r} is {shown}, not an image (a file path, encoded bytes or a PIL image). "
        "Fix or remove the row."
    )


def is_image_reference(value: Any) -> bool:
    """Whether ``value`` is a cell built by :func:`image_reference`."""
    return isinstance(value, Mapping) and "image_path" in value and "image_bytes" in value and "row" in value


def decode_image(reference: Mapping[str, Any], column: str = "image"):
    """Open the image of ``reference`` as an RGB PIL image, fully decoded now (so a truncated file fails here).

    Raises:
        DataError: The file is gone, unreadable or not a decodable image; the message names the image and the row.
    """
    return _decode(reference, column)[0]


def checked_image(reference: Mapping[str, Any], column: str = "image") -> dict[str, Any]:
    """``reference`` with its encoded bytes read in, once the image has been decoded whole (``on_bad_rows: skip``
    of a stream: the reader finds the bad image, and the batch does not read it a second time).

    Raises:
        DataError: As :func:`decode_image`.
    """
    image, data = _decode(reference, column)
    image.close()
    return {**reference, "image_bytes": data}


def usable_image(value: Any, base_dir: str | Path | None, where: str, column: str, decode: bool) -> dict[str, Any]:
    """The :func:`image_reference` of an image cell (a reference already made passes through), with ``decode`` also
    read and decoded whole (:func:`checked_image`): ``on_bad_rows: skip`` finds bad images with it.

    Raises:
        BadRowError: Reason ``missing image``, ``not an image`` or ``undecodable image``; the message names the row.
    """
    try:
        reference = value if is_image_reference(value) else image_reference(value, base_dir, where, column)
    except DataError as error:
        raise BadRowError(str(error), "missing image" if "does not exist" in str(error) else "not an image") from None
    if not decode:
        return reference
    try:
        return checked_image(reference, column)
    except DataError as error:
        missing = "no such file or object" in str(error)  # an image URL that is not there
        raise BadRowError(str(error), "missing image" if missing else "undecodable image") from None


def _decode(reference: Mapping[str, Any], column: str):
    """``(RGB image, encoded bytes)`` of ``reference``; errors name the image and the row."""
    from PIL import Image

    path = reference.get("image_path")
    what = f"image {path!r}" if path else "the image bytes"
    if reference.get("offset") is not None:
        what = f"image at byte {reference['offset']} of {path!r}"
    try:
        data = _encoded(reference)
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image.convert("RGB"), data
    except DataError as error:  # a URL that cannot be read: the message names it and what went wrong
        raise DataError(f"{reference.get('row')}: column {column!r}: {error}") from error
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise DataError(
            f"{reference.get('row')}: column {column!r}: {what} cannot be decoded ({type(error).__name__}: {error}). "
            "Fix or remove the row."
        ) from error


def _encoded(reference: Mapping[str, Any]) -> bytes:
    """The encoded image of ``reference``: its bytes, else read from its file, URL or byte range."""
    if reference.get("image_bytes") is not None:
        return reference["image_bytes"]
    return _read_range(reference["image_path"], reference.get("offset") or 0, reference.get("size"))


def image_identity(reference: Mapping[str, Any]) -> Any:
    """A hashable value equal for two references to the same image (a digest of the bytes, else where they are):
    streamed batches keep an image, like a text, once per batch. A :func:`portable_reference` keeps the digest of the
    bytes it leaves out, so a resumed stream tells images apart as the uninterrupted one did."""
    if reference.get("digest"):
        return ("image", reference["digest"])
    if reference.get("image_bytes") is not None:
        return ("image", hashlib.blake2b(reference["image_bytes"], digest_size=16).hexdigest())
    return ("image", reference.get("image_path"), reference.get("offset"))


def portable_reference(reference: Mapping[str, Any]) -> dict[str, Any]:
    """``reference`` as JSON can hold it (a stream position's pending rows): without the bytes where the image can be
    read again from its file, URL or byte range (their digest kept, see :func:`image_identity`), else with them in
    base64."""
    portable = dict(reference)
    if portable.get("image_path") and portable.get("image_bytes") is not None:
        portable["digest"] = image_identity(portable)[1]
        portable["image_bytes"] = None
    elif portable.get("image_bytes") is not None:
        portable["image_bytes"] = {"base64": base64.b64encode(portable["image_bytes"]).decode("ascii")}
    return portable


def restored_reference(portable: Mapping[str, Any]) -> dict[str, Any]:
    """The reference of a :func:`portable_reference`."""
    reference = dict(portable)
    if isinstance(reference.get("image_bytes"), Mapping):
        reference["image_bytes"] = base64.b64decode(reference["image_bytes"]["base64"])
    return reference


def register_image_storage(spec: Any) -> None:
    """Read the images at URLs of dataset ``spec`` (a :class:`~st_contrast.data.DatasetSpec` with image columns or tar
    shards) with its ``storage_options`` when their batch is built: those of its data's buckets."""
    if spec.storage_options and (spec.image_shards or spec.image_columns):
        for path in [spec.path] if isinstance(spec.path, (str, os.PathLike)) else spec.path:
            register_storage_options(str(path), spec.storage_options)


def _read_range(path: str, offset: int, size: int | None) -> bytes:
    """``size`` bytes (None: the rest) at ``offset`` of a local file or a URL (one read, credentials from the
    environment)."""
    if not is_url(path):
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read(-1 if size is None else size)
    fs, inner = url_filesystem(path)
    with reading(path):
        return fs.cat_file(inner, start=offset, end=None if size is None else offset + size)


def reference_image_columns(
    dataset: datasets.Dataset,
    columns: Sequence[str],
    base_dir: Callable[[int], str | Path | None],
    where: Callable[[int], str],
    name: str,
) -> datasets.Dataset:
    """``dataset`` with each of ``columns`` turned into image references (checked row by row, nothing decoded).

    Args:
        dataset: The source rows.
        columns: The image columns.
        base_dir: Row index -> the directory relative paths of that row are relative to (its data file's folder).
        where: Row index -> ``"file, row N"`` for messages.
        name: The dataset's name, for the progress bar.
    """
    for column in columns:
        if isinstance(dataset.features[column], datasets.Image):  # a schema change: nothing is rewritten
            dataset = dataset.cast_column(column, datasets.Image(decode=False))
    features = datasets.Features(
        {key: IMAGE_REFERENCE if key in columns else feature for key, feature in dataset.features.items()}
    )

    def convert(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        for column in columns:
            batch[column] = [
                image_reference(value, base_dir(row), where(row), column)
                for value, row in zip(batch[column], indices, strict=True)
            ]
        return batch

    return dataset.map(
        convert, batched=True, with_indices=True, features=features, desc=f"Indexing the images of {name}"
    )
