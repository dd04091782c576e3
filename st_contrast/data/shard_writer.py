"""Write an image-text table as webdataset tar shards, ready to upload to object storage and stream from there.

:func:`write_tar_shards` turns a local data file (JSON Lines, CSV, TSV or Parquet, as ``image_columns`` reads it:
image paths relative to the file, URLs, bytes) into ``shard-00000.tar``, ``shard-00001.tar``... of ``shard_size``
samples each: ``KEY.<ext>`` (the encoded image, unchanged), ``KEY.txt`` (the caption) and ``KEY.json`` (the other
columns), with open_clip's ``sizes.json`` beside them, the layout :mod:`st_contrast.data.stream_tar` streams.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

from st_contrast.data.images import checked_image

__all__ = ["write_tar_shards"]

_FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp"}


def write_tar_shards(
    data_file: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    image_column: str = "image",
    text_column: str = "caption",
    shard_size: int = 1000,
) -> list[Path]:
    """Write the rows of ``data_file`` as tar shards of ``shard_size`` samples in ``output_dir``, with ``sizes.json``;
    returns the shards. Every image is read and decoded once (a bad one stops with its row named) and stored as it was
    encoded.

    Args:
        data_file: A local JSON Lines / CSV / TSV / Parquet file with an image column and a caption column.
        output_dir: Where the shards go (created).
        image_column: The column of images (paths relative to the file, URLs or bytes).
        text_column: The caption column (the ``.txt`` member); the remaining columns go to the ``.json`` member.
        shard_size: Samples per shard.

    Example:
        ::

            from st_contrast.data import write_tar_shards

            write_tar_shards("pictures/train.jsonl", "pictures/shards", shard_size=10_000)
            # aws s3 sync pictures/shards s3://bucket/pictures, then train on
            # {path: "s3://bucket/pictures/shard-{00000..00009}.tar", columns: [image, text]}
    """
    from PIL import Image

    from st_contrast.data.loading import _load_files, load_dataset_spec
    from st_contrast.data.spec import DatasetSpec

    if shard_size < 1:
        raise ValueError(f"shard_size must be positive, got {shard_size}.")
    spec = DatasetSpec(
        name=Path(data_file).stem,
        path=str(data_file),
        columns=[image_column, text_column],
        image_columns=[image_column],
    )
    pairs = load_dataset_spec(spec)  # checked: captions are text, image files exist (references, nothing decoded)
    table, _ = _load_files([str(data_file)], spec, None)  # the same rows, every column as it is
    fields = [column for column in table.column_names if column not in (image_column, text_column)]
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    shards, sizes = [], {}
    for first in range(0, len(pairs), shard_size):
        shard = output / f"shard-{len(shards):05d}.tar"
        rows = range(first, min(first + shard_size, len(pairs)))
        extras = table.select(rows).select_columns(fields) if fields else None
        with tarfile.open(shard, "w") as archive:
            for position, number in enumerate(rows):
                row = pairs[number]
                encoded = checked_image(row[image_column], image_column)["image_bytes"]
                with Image.open(io.BytesIO(encoded)) as image:
                    extension = _FORMATS.get(image.format or "")
                    if extension is None:  # a format webdataset readers do not look for (TIFF...): stored as PNG
                        buffer = io.BytesIO()
                        image.save(buffer, format="PNG")
                        encoded, extension = buffer.getvalue(), ".png"
                _add(archive, f"{number:08d}{extension}", encoded)
                _add(archive, f"{number:08d}.txt", row[text_column].encode("utf8"))
                if extras is not None:
                    _add(archive, f"{number:08d}.json", json.dumps(extras[position], default=_plain).encode("utf8"))
        shards.append(shard)
        sizes[shard.name] = len(rows)
    (output / "sizes.json").write_text(json.dumps(sizes, indent=1), encoding="utf8")
    return shards


def _add(archive: tarfile.TarFile, name: str, payload: bytes) -> None:
    member = tarfile.TarInfo(name)
    member.size = len(payload)
    archive.addfile(member, io.BytesIO(payload))


def _plain(value: Any) -> Any:
    return value.tolist() if hasattr(value, "tolist") else str(value)
