"""Webdataset-style tar shards of image-text pairs, indexed without decoding or reading the images.

A shard is a plain tar file whose adjacent members sharing a key (the member name up to its first dot) are one
sample, as in webdataset and as a stream reads them: ``0001.jpg`` + ``0001.txt`` (+ ``0001.json``) is one sample; a key
that comes back after another sample's members starts a new sample. Each sample becomes a row with an
``image`` column (a reference to the image's byte range inside the shard, decoded only when its batch is built), a
``text`` column (the ``.txt`` member) and the top-level fields of the ``.json`` member as further columns.
"""

from __future__ import annotations

import contextlib
import json
import tarfile
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

import datasets

from st_contrast.data.columns import BadRowError, DataError
from st_contrast.data.images import IMAGE_REFERENCE
from st_contrast.data.urls import expand_url, is_url, open_url, reading, url_filesystem

__all__ = ["IMAGE_EXTENSIONS", "expand_shard_urls", "load_image_shards", "member_key", "read_caption"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")


def expand_shard_urls(urls: list[str]) -> list[str]:
    """The shard URLs that ``urls`` name (globs and contrastors-style brace ranges expanded), in order."""
    shards = []
    for url in urls:
        fs, path = url_filesystem(url)
        protocol = url.split("://", 1)[0]
        shards += [path if "://" in path else f"{protocol}://{path}" for path in expand_url(url, fs, path)]
    return shards


@contextlib.contextmanager
def _open_shard(shard: str) -> Iterator[tarfile.TarFile]:
    """The shard as a tar archive that seeks over the image data: a local file, or a URL read through fsspec."""
    if not is_url(shard):
        with tarfile.open(shard, "r:") as archive:
            yield archive
        return
    fs, path = url_filesystem(shard)
    with reading(shard), open_url(fs, path, shard) as handle, tarfile.open(fileobj=handle, mode="r:") as archive:
        yield archive


def member_key(member: tarfile.TarInfo) -> tuple[str, str]:
    """``(sample key, lower-case extension)`` of a tar member: ``images/0001.jpg`` -> ``("images/0001", ".jpg")``."""
    path = PurePosixPath(member.name)
    key, _, extension = path.name.partition(".")
    return str(path.parent / key), "." + extension.lower()


def read_caption(archive: tarfile.TarFile, member: tarfile.TarInfo, where: str) -> str | Any:
    """The ``.txt`` member as stripped text, or the ``.json`` member parsed.

    Raises:
        BadRowError: Bytes that are not UTF-8 (``not UTF-8``) or malformed JSON (``malformed JSON``), naming
            ``where`` and the member.
    """
    raw = archive.extractfile(member).read()
    try:
        text = raw.decode("utf8")
        return json.loads(text) if member_key(member)[1] == ".json" else text.strip()
    except UnicodeDecodeError as error:
        raise BadRowError(f"{where}, member {member.name!r}: not UTF-8 ({error}).", "not UTF-8") from error
    except json.JSONDecodeError as error:
        raise BadRowError(f"{where}, member {member.name!r}: malformed JSON ({error}).", "malformed JSON") from error


def _samples(shard: str) -> list[dict[str, Any]]:
    """The shard's samples in order: ``{"key", "image": TarInfo | None, "txt": str | None, "json": dict | None}``;
    of several image members of a sample, the first extension of :data:`IMAGE_EXTENSIONS` is its image."""
    samples: list[dict[str, Any]] = []
    try:
        with _open_shard(shard) as archive:
            for member in archive:
                if not member.isfile():
                    continue
                key, extension = member_key(member)
                if not samples or samples[-1]["key"] != key:
                    samples.append({"key": key, "images": {}, "txt": None, "json": None})
                sample = samples[-1]
                if extension in IMAGE_EXTENSIONS:
                    sample["images"][extension] = member
                elif extension in (".txt", ".json"):
                    try:
                        sample[extension[1:]] = read_caption(archive, member, shard)
                    except BadRowError as error:
                        raise DataError(f"{error} Fix or remove the sample.") from error
    except (tarfile.TarError, OSError) as error:
        raise DataError(f"{shard}: not a readable tar shard ({type(error).__name__}: {error}).") from error
    for sample in samples:
        images = sample.pop("images")
        sample["image"] = next((images[extension] for extension in IMAGE_EXTENSIONS if extension in images), None)
    return samples


def load_image_shards(
    shards: list[str], name: str, max_rows: int | None = None
) -> tuple[datasets.Dataset, list[tuple[str, int]]]:
    """Index ``shards`` as one dataset (images as byte-range references); returns it and ``(shard, rows)`` counts.

    Raises:
        DataError: A shard that is no tar file, a sample without an image or without a ``.txt`` / ``.json``
            caption, or a malformed ``.json``; the message names the shard and the sample's key.
    """
    rows: list[dict[str, Any]] = []
    counts = []
    for shard in shards:
        samples = _samples(shard)
        if not samples:
            raise DataError(f"Dataset {name!r}: {shard} holds no samples.")
        for number, sample in enumerate(samples):
            where = f"{shard}, row {number} (key {sample['key']!r})"
            if sample["image"] is None:
                raise DataError(f"{where}: the sample has no image member ({', '.join(IMAGE_EXTENSIONS)}).")
            if sample["txt"] is None and sample["json"] is None:
                raise DataError(f"{where}: the sample has no .txt or .json member with its text.")
            if sample["json"] is not None and not isinstance(sample["json"], dict):
                raise DataError(f"{where}: its .json member must hold an object, got {type(sample['json']).__name__}.")
            member = sample["image"]
            row = {
                "image": {
                    "image_path": shard,
                    "image_bytes": None,
                    "offset": member.offset_data,
                    "size": member.size,
                    "row": where,
                },
                **({"text": sample["txt"]} if sample["txt"] is not None else {}),
                **(sample["json"] or {}),
            }
            rows.append(row)
        counts.append((shard, len(samples)))
        if max_rows is not None and len(rows) >= max_rows:
            break
    columns = list(dict.fromkeys(key for row in rows for key in row))
    missing = [column for column in columns if any(column not in row for row in rows)]
    if missing:
        raise DataError(f"Dataset {name!r}: the columns {missing} are missing from some samples of {shards[0]}...")
    table = {column: [row[column] for row in rows] for column in columns}
    features = datasets.Dataset.from_dict({k: v for k, v in table.items() if k != "image"}).features
    features["image"] = IMAGE_REFERENCE
    return datasets.Dataset.from_dict(table, features=datasets.Features(features)), counts
