"""Webdataset-style tar shards read row by row, for streams: one pass front to back, the images read as they pass.

As in webdataset, the adjacent members of a shard that share a key (the member name up to its first dot) are one
sample, and the samples are the shard's rows, in order: ``0001.jpg`` + ``0001.txt`` (+ ``0001.json``) becomes a row
with an ``image`` column, a ``text`` column and the top-level fields of the ``.json`` member. The image stays encoded:
its bytes travel with the row inside an image reference that also names the shard and the byte range, so that a
checkpoint records where the image is, not the image. Seeking to row ``N`` reads the tar headers before it and skips
their data. A sample without an image or a caption, a caption that is not UTF-8 or malformed JSON is a bad row
(``on_bad_rows``), named by shard, row and key.

Row counts come from ``counts.json`` or open_clip's ``sizes.json`` (``{shard file name: samples}``) beside the
shards; without one, :func:`count_tar_samples` reads every shard's headers once before training starts
(:func:`index_tar_shards` writes ``sizes.json`` for a folder of shards once instead).
"""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from st_contrast.data.columns import BadRowError, DataError
from st_contrast.data.image_shards import IMAGE_EXTENSIONS, member_key, read_caption
from st_contrast.data.urls import open_url, reading

__all__ = ["count_tar_samples", "index_tar_shards", "iter_tar_records"]

_BLOCK = 8 << 20  # bytes per storage request, as for the other stream formats
_CAPTIONS = (".txt", ".json")


def _open(fs: Any, path: str, url: str) -> tuple[Any, tarfile.TarFile]:
    raw = open_url(fs, path, url, block_size=_BLOCK)
    try:
        return raw, tarfile.open(fileobj=raw, mode="r:")
    except tarfile.TarError as error:
        raw.close()
        raise DataError(f"{url}: not a readable tar shard ({type(error).__name__}: {error}).") from error


def _members(archive: tarfile.TarFile) -> Iterator[tuple[str, str, tarfile.TarInfo]]:
    """``(key, extension, member)`` of the files of ``archive``, in order; the archive keeps no member list (a stream
    holds one sample at a time, whatever the shard's size)."""
    while (member := archive.next()) is not None:
        archive.members = []  # tarfile keeps every header it read; a stream needs none of them
        if member.isfile():
            yield (*member_key(member), member)


def count_tar_samples(fs: Any, path: str, url: str) -> int:
    """The samples of the tar shard at ``path`` of fsspec filesystem ``fs`` (groups of adjacent members sharing a
    key), from its headers alone; errors name ``url``."""
    raw, archive = _open(fs, path, url)
    samples, key = 0, None
    with raw, archive, reading(url):
        try:
            for sample, _, _ in _members(archive):
                if sample != key:
                    samples, key = samples + 1, sample
        except tarfile.TarError as error:
            raise DataError(f"{url}: the tar shard is damaged ({error}); replace it.") from error
    return samples


def index_tar_shards(directory: str | os.PathLike) -> dict[str, int]:
    """Write open_clip's ``sizes.json`` (``{shard file name: samples}``) for the ``*.tar`` shards of the local folder
    ``directory``, from their headers; returns the counts. Upload it with the shards: a stream then starts without
    reading any header.

    Example:
        ::

            from st_contrast.data import index_tar_shards

            index_tar_shards("web-shards")  # then: aws s3 sync web-shards s3://bucket/web
    """
    import fsspec

    root = Path(directory)
    shards = sorted(root.glob("*.tar"))
    if not shards:
        raise DataError(f"{root}: no *.tar shards to index.")
    fs = fsspec.filesystem("file")
    sizes = {shard.name: count_tar_samples(fs, str(shard), str(shard)) for shard in shards}
    (root / "sizes.json").write_text(json.dumps(sizes, indent=1), encoding="utf8")
    return sizes


def iter_tar_records(
    source: Any, file: Any, start: int, stop: int | None
) -> Iterator[tuple[int, dict[str, Any] | BadRowError, str]]:
    """``(row, record or BadRowError, where)`` for samples ``start..stop-1`` of tar shard ``file``; only their members
    are read (the headers of the samples before them are, to find them). A shard cut short ends with a
    ``truncated file`` error for the sample it cut, also one cut within its first header when its samples are counted
    (``sizes.json``): every sample the count promises is then lost (without a count, no sample is known to be lost,
    and the unreadable shard is an error)."""
    try:
        raw, archive = _open(source.fs, file.path, file.url)
    except DataError as error:
        if file.rows is None:
            raise
        yield start, BadRowError(f"{error} Its samples from row {start} on are lost.", "truncated file"), file.url
        return
    row, key, parts = -1, None, {}
    with raw, archive, reading(file.url):
        try:
            for sample, extension, member in _members(archive):
                if sample != key:
                    if row >= start:
                        yield row, _record(file, row, key, parts), _where(file, row, key)
                    row, key, parts = row + 1, sample, {}
                    if stop is not None and row >= stop:
                        return
                if row >= start and (extension in IMAGE_EXTENSIONS or extension in _CAPTIONS):
                    parts[extension] = _read_member(archive, member, _where(file, row, key))
        except tarfile.TarError as error:
            where = _where(file, max(row, start), key)
            yield (
                max(row, start),
                BadRowError(f"{where}: the tar shard is cut short ({error}).", "truncated file"),
                where,
            )
            return
        if key is not None and row >= start:
            yield row, _record(file, row, key, parts), _where(file, row, key)


def _where(file: Any, row: int, key: str | None) -> str:
    return f"{file.url}, row {row} (key {key!r})"


def _read_member(archive: tarfile.TarFile, member: tarfile.TarInfo, where: str) -> Any:
    """An image member as ``(offset, bytes)``, a caption as its text / JSON value, or the BadRowError it raised."""
    if member_key(member)[1] in IMAGE_EXTENSIONS:
        return member.offset_data, archive.extractfile(member).read()
    try:
        return read_caption(archive, member, where)
    except BadRowError as error:
        return error


def _record(file: Any, row: int, key: str, parts: dict[str, Any]) -> dict[str, Any] | BadRowError:
    where = _where(file, row, key)
    for value in parts.values():
        if isinstance(value, BadRowError):
            return value
    image = next((parts[extension] for extension in IMAGE_EXTENSIONS if extension in parts), None)
    if image is None:
        return BadRowError(f"{where}: the sample has no image member ({', '.join(IMAGE_EXTENSIONS)}).", "missing image")
    text, fields = parts.get(".txt"), parts.get(".json")
    if text is None and fields is None:
        return BadRowError(f"{where}: the sample has no .txt or .json member with its text.", "missing text")
    if fields is not None and not isinstance(fields, dict):
        return BadRowError(
            f"{where}: its .json member must hold an object, got {type(fields).__name__}.", "malformed JSON"
        )
    offset, data = image
    reference = {"image_path": file.url, "image_bytes": data, "offset": offset, "size": len(data), "row": where}
    return {"image": reference, **({"text": text} if text is not None else {}), **(fields or {})}
