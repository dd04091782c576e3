"""``on_bad_rows: skip`` for image columns loaded into memory: every image decoded once, and the result kept.

A bad image must not stop a run when its batch is built, so with ``skip`` every image of a dataset is decoded once
when the data loads (on a few threads: decoding releases the GIL) and the rows with a missing, non-image or
undecodable image are left out. Decoding a large image set takes minutes, and a rerun, or a run resumed from its
checkpoint, would pay it again: the result is therefore kept in the ``datasets`` cache folder, under a key made of
every image's identity, row by row: a file's path, byte range, size and modification time (a tar shard's for its
members), a digest of encoded bytes held in the table, the error of a cell that names no image. A byte range of a tar
shard at a URL is identified by the shard's size and version (ETag, modification time): one request per shard. An
image that is an object of its own at a URL is identified by its entry in its folder's listing (size and version,
or its absence): one listing per folder (S3: a request per 1,000 objects), not a request per image. Loading the same
images again reuses the result without decoding any; touching, replacing, adding or removing an image (or a shard)
checks them all again. Where a folder cannot be listed with version stamps (most HTTP servers), its images are
checked on every load.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import datasets

from st_contrast.data.columns import BadRowError
from st_contrast.data.images import usable_image
from st_contrast.data.urls import is_url, reading, url_filesystem

__all__ = ["bad_image_rows"]

logger = logging.getLogger(__name__)

_BATCH = 256
_FORMAT = 2  # bump when what a check finds, or how it is stored, changes
_VERSION_KEYS = ("ETag", "etag", "generation", "LastModified", "last_modified", "updated", "mtime")
"""The fields of an fsspec entry that change when an object is written again (S3, GCS, local files...)."""


def bad_image_rows(
    dataset: datasets.Dataset,
    columns: list[str],
    base_dir: Callable[[int], str | Path | None],
    where: Callable[[int], str],
    name: str,
    cache_dir: str | None = None,
) -> list[tuple[int, BadRowError]]:
    """The rows of ``dataset`` whose image in one of ``columns`` is missing, not an image or not decodable, each with
    the error of its first bad image, in row order; from the kept result of an earlier identical check when there is
    one.

    Args:
        dataset: The rows, with the image cells as the data holds them (paths, bytes, ``datasets.Image`` cells...).
        columns: The image columns.
        base_dir: Row index -> the folder relative image paths of that row are relative to.
        where: Row index -> ``"file, row N (data line M)"`` for the messages.
        name: The dataset's name, for the log.
        cache_dir: The ``datasets`` cache folder (default: the Hugging Face one) that keeps the result.
    """
    cache = _result_file(dataset, columns, base_dir, where, cache_dir)
    if cache is not None and cache.is_file():
        try:
            found = _read(cache)
        except (OSError, ValueError, KeyError, TypeError):
            logger.warning("Dataset %r: the kept image check %s is unreadable; checking again.", name, cache)
        else:
            logger.info("Dataset %r: images checked before (%s): %d bad row(s), none decoded.", name, cache, len(found))
            return found

    def problem(row: int, values: dict[str, Any]) -> BadRowError | None:
        for column in columns:
            try:
                usable_image(values[column], base_dir(row), where(row), column, decode=True)
            except BadRowError as error:
                return error
        return None

    found: list[tuple[int, BadRowError]] = []
    first = 0
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for batch in _undecoded(dataset, columns).iter(batch_size=_BATCH):
            size = len(batch[columns[0]])
            rows = [{column: batch[column][offset] for column in columns} for offset in range(size)]
            for row, error in enumerate(pool.map(problem, range(first, first + size), rows), start=first):
                if error is not None:
                    found.append((row, error))
            first += size
    if cache is not None:
        _write(cache, found, name)
    return found


def _result_file(
    dataset: datasets.Dataset,
    columns: list[str],
    base_dir: Callable[[int], str | Path | None],
    where: Callable[[int], str],
    cache_dir: str | None,
) -> Path | None:
    """Where the check of exactly these images is kept, named by a digest of every image cell's identity; None when
    an image is at a URL."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps([_FORMAT, columns]).encode())
    versions = _UrlVersions()
    first = 0
    for batch in _undecoded(dataset, columns).iter(batch_size=_BATCH):
        for offset in range(len(batch[columns[0]])):
            row = first + offset
            for column in columns:
                identity = _identity(batch[column][offset], base_dir(row), where(row), column, versions)
                if identity is None:
                    return None
                digest.update(f"{where(row)}\0{column}\0{identity}\n".encode())  # the messages name the row
        first += len(batch[columns[0]])
    root = Path(cache_dir or datasets.config.HF_DATASETS_CACHE)
    return root / "st_contrast_image_checks" / f"{digest.hexdigest()}.json"


def _identity(value: Any, base_dir: str | Path | None, where: str, column: str, versions: _UrlVersions) -> str | None:
    """What decides whether one image cell is good: where its image is and the file's (or URL object's) size and
    version, a digest of its encoded bytes, or why it names no image; None for an image at a URL whose version
    cannot be told."""
    try:
        reference = usable_image(value, base_dir, where, column, decode=False)
    except BadRowError as error:  # missing or not an image: the same unless the file appears
        return f"bad\0{error}"
    path = reference["image_path"]
    if path is None:
        return f"bytes\0{hashlib.blake2b(reference['image_bytes'], digest_size=16).hexdigest()}"
    if is_url(path):
        version = versions.of_object(path) if reference["offset"] is None else versions.of_shard(path)
        if version is None:
            return None
        return f"url\0{path}\0{reference['offset']}\0{reference['size']}\0{version}"
    try:
        stat = os.stat(path)
    except OSError as error:  # gone since it was found: checked (and named) like a missing one
        return f"bad\0{error}"
    return f"file\0{path}\0{reference['offset']}\0{reference['size']}\0{stat.st_size}\0{stat.st_mtime_ns}"


class _UrlVersions:
    """Version stamps of objects at URLs: a tar shard's by one request each, an image object's from its folder's
    listing (one per folder)."""

    def __init__(self) -> None:
        self._shards: dict[str, str] = {}
        self._folders: dict[str, dict[str, str] | None] = {}

    def of_shard(self, url: str) -> str:
        if url not in self._shards:
            fs, inner = url_filesystem(url)
            with reading(url):
                fs.invalidate_cache(inner)  # a listing kept by this process may predate a new upload
                self._shards[url] = _version(fs.info(inner))
        return self._shards[url]

    def of_object(self, url: str) -> str | None:
        """The listed size and version of the object at ``url``, ``"absent"`` when its folder's listing lacks it,
        None when the folder cannot be listed with version stamps."""
        folder, _, name = url.rpartition("/")
        if folder not in self._folders:
            self._folders[folder] = _listing(folder)
        listing = self._folders[folder]
        return None if listing is None else listing.get(name, "absent")


def _version(entry: dict[str, Any]) -> str:
    return json.dumps([entry.get("size"), *(entry.get(key) for key in _VERSION_KEYS)], default=str)


def _listing(folder: str) -> dict[str, str] | None:
    """Name -> version of every object in the folder at URL ``folder``; None when it cannot be listed or its
    entries carry no version stamp (only a size, which a same-size rewrite keeps)."""
    fs, inner = url_filesystem(folder)
    try:
        fs.invalidate_cache(inner)
        entries = fs.ls(inner, detail=True)
    except Exception as error:  # noqa: BLE001 - any listing failure only means checking on every load
        logger.debug("cannot list %s (%s): its images are checked on every load", folder, error)
        return None
    files = [entry for entry in entries if entry.get("type") == "file"]
    if not all(any(entry.get(key) is not None for key in _VERSION_KEYS) for entry in files):
        return None
    return {entry["name"].rstrip("/").rpartition("/")[2]: _version(entry) for entry in files}


def _undecoded(dataset: datasets.Dataset, columns: list[str]) -> datasets.Dataset:
    """The image ``columns`` of ``dataset``, ``datasets.Image`` cells as their encoded bytes or path: iterating does
    not decode them (the check does, and names a bad one as a bad row rather than failing in ``datasets``)."""
    dataset = dataset.select_columns(columns)
    for column in columns:
        if isinstance(dataset.features[column], datasets.Image):  # a schema change: nothing is rewritten
            dataset = dataset.cast_column(column, datasets.Image(decode=False))
    return dataset


def _read(path: Path) -> list[tuple[int, BadRowError]]:
    stored = json.loads(path.read_text())
    return [(row, BadRowError(message, reason, rows)) for row, message, reason, rows in stored["bad_rows"]]


def _write(path: Path, found: list[tuple[int, BadRowError]], name: str) -> None:
    """Keep the result (written whole, then renamed: ranks checking at once, or a killed run, leave no partial
    file); a cache folder that cannot be written only costs the next load the check."""
    stored = {"bad_rows": [[row, str(error), error.reason, error.rows] for row, error in found]}
    partial = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
            partial = handle.name
            json.dump(stored, handle)
        os.replace(partial, path)
    except OSError as error:
        if partial is not None:
            Path(partial).unlink(missing_ok=True)
        logger.info("Dataset %r: the image check is not kept (%s: %s); the next load checks again.", name, path, error)
