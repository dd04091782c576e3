"""Where a streamed dataset's rows are: its files (URLs or local paths), their row counts and the column plan.

:func:`open_stream_source` resolves a dataset entry's ``path`` without reading the data: a contrastors shard folder
(``counts.json`` beside ``*.jsonl.gz`` shards, ``offsets.json.gz`` optional), a contrastors bucket pattern
(``s3://bucket/corpus/shard-{00000..00099}.jsonl.gz``), a folder, glob or list of JSON Lines / CSV / TSV / Parquet
files, or webdataset-style image-text tar shards (:mod:`~st_contrast.data.stream_tar`). Row counts come from
``counts.json`` (or open_clip's ``sizes.json`` beside tar shards) or Parquet footers; other files are counted in one
read (write a ``counts.json`` with :func:`~st_contrast.data.index_contrastors_shards` to skip it; a tar shard's
headers alone are read). The first row fixes the column plan; image columns hold image references. Missing buckets,
objects and denied access are :class:`DataError` naming the URL.
"""

from __future__ import annotations

import glob as local_glob
import gzip
import io
import json
import logging
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from st_contrast.data.columns import BadRowError, ColumnPlan, DataError, plan_columns
from st_contrast.data.contrastors import iter_object_items, offset_entry
from st_contrast.data.images import register_image_storage
from st_contrast.data.records import text_format
from st_contrast.data.spec import DatasetSpec
from st_contrast.data.urls import expand_braces, expand_url, is_url, reading, url_filesystem

__all__ = ["StreamFile", "StreamSource", "open_stream_source"]

logger = logging.getLogger(__name__)

_OFFSETS_NAMES = ("offsets.json.gz", "offsets.json")
_COUNTS_NAMES = ("counts.json", "sizes.json")
_FIRST_ROW_SCAN = 1000


@dataclass
class StreamFile:
    """One data file of a stream: its URL (for messages), its path in the filesystem, its format and row count."""

    url: str
    path: str
    kind: str  # json, csv, tsv, parquet or tar
    gzip: bool
    rows: int | None = None


def _kind(path: str) -> str | None:
    lowered = path.lower()
    if lowered.endswith(".tar"):
        return "tar"
    return "parquet" if lowered.endswith(".parquet") else text_format(lowered)


class StreamSource:
    """The files of one streamed dataset, their counts, the seek offsets and the column plan.

    Args:
        spec: The dataset entry.
        fs: The fsspec filesystem of its files.
        files: The files, in the dataset's order (global row indices follow it).
        offsets_path: The contrastors ``offsets.json(.gz)`` in ``fs``, if any (for cheap seeks).
        url_of: The URL of a path in ``fs`` (for messages); default: the path itself.
    """

    def __init__(
        self,
        spec: DatasetSpec,
        fs: Any,
        files: list[StreamFile],
        offsets_path: str | None = None,
        url_of: Any = None,
    ) -> None:
        self.spec = spec
        self.fs = fs
        self.files = files
        self.offsets_path = offsets_path
        self.url_of = url_of or (lambda path: path)
        self.objective = spec.objective
        self.plan: ColumnPlan = self._plan()
        self._offsets_cache: tuple[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def _plan(self) -> ColumnPlan:
        from st_contrast.data.stream_files import iter_file_records

        first = self.files[0]
        for row, record, where in iter_file_records(self, first, 0, None):
            if isinstance(record, dict):
                plan = plan_columns(self.spec, list(record), record, where)
                tar_image = ["image"] if first.kind == "tar" and "image" in plan.sources else []
                return plan.with_images([*self.spec.image_columns, *tar_image], f"Dataset {self.spec.name!r}")
            if self.spec.on_bad_rows == "raise" or record.reason.startswith("truncated file") or row >= _FIRST_ROW_SCAN:
                raise DataError(f"Dataset {self.spec.name!r}: {record}")
        raise DataError(f"Dataset {self.spec.name!r}: {first.url} has no rows.")

    def count_rows(self) -> None:
        """Fill in the row counts that ``counts.json`` / Parquet footers did not give, by reading the files once."""
        from st_contrast.data.stream_files import iter_file_records
        from st_contrast.data.stream_tar import count_tar_samples

        for file in self.files:
            if file.rows is None and file.kind == "tar":
                logger.info(
                    "%s has no counts.json / sizes.json entry: reading its headers to count its samples.", file.url
                )
                file.rows = count_tar_samples(self.fs, file.path, file.url)
            elif file.rows is None:
                logger.warning(
                    "%s has no counts.json entry: counting its rows (one read). index_contrastors_shards(folder) "
                    "writes counts.json and offsets.json.gz to skip this.",
                    file.url,
                )
                rows = 0
                for _, record, _ in iter_file_records(self, file):
                    if isinstance(record, BadRowError) and record.reason.startswith("truncated file"):
                        break
                    rows += 1
                file.rows = rows

    @property
    def total_rows(self) -> int:
        """Rows of the dataset (all files, cut at ``max_rows``); needs the counts (:meth:`count_rows`)."""
        total = sum(file.rows for file in self.files)
        return total if self.spec.max_rows is None else min(total, self.spec.max_rows)

    def offset_of(self, file: StreamFile, row: int) -> int | None:
        """Byte offset of ``row`` in the decompressed ``file`` from the contrastors offsets, or None without them."""
        if self.offsets_path is None or file.kind != "json":
            return None
        name = file.path.rsplit("/", 1)[-1]
        if self._offsets_cache is None or self._offsets_cache[0] != name:
            self._offsets_cache = (name, self._read_offsets(name))
        entry = offset_entry(self._offsets_cache[1], row) if self._offsets_cache[1] is not None else None
        if not (isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[0], int)):
            return None
        return entry[0]

    def _read_offsets(self, name: str) -> Any:
        """The offsets entry of one shard, parsed one shard entry at a time (bounded memory)."""
        url = self.url_of(self.offsets_path)
        with reading(url), self.fs.open(self.offsets_path, "rb") as raw:
            binary = gzip.GzipFile(fileobj=raw) if self.offsets_path.endswith(".gz") else raw
            handle = io.TextIOWrapper(binary, encoding="utf8")
            for key, value in iter_object_items(handle, url):
                if key.rstrip("/").rsplit("/", 1)[-1] == name:
                    return value
        return None


def _read_counts(fs: Any, path: str, url: str) -> dict[str, int]:
    with reading(url):
        text = fs.cat_file(path)
    try:
        counts = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{url}: malformed JSON ({error}).") from error
    if isinstance(counts, dict) and isinstance(counts.get("count_per_file"), dict):
        counts = counts["count_per_file"]
    if not isinstance(counts, dict) or not all(isinstance(value, int) for value in counts.values()):
        raise DataError(f"{url}: expected {{shard file: row count}} (or under 'count_per_file').")
    named: dict[str, int] = {}
    for key, value in counts.items():
        name = key.rstrip("/").rsplit("/", 1)[-1]
        if name in named:
            raise DataError(f"{url}: two entries for shard {name!r}; keep one per file name.")
        named[name] = value
    return named


def _exists(fs: Any, path: str, url: str) -> bool:
    with reading(url):
        return fs.exists(path)


def _listing(fs: Any, folder: str, url: str) -> list[str] | None:
    """The file paths directly in ``folder``, or None where the filesystem cannot list (plain HTTP servers)."""
    with reading(url):
        try:
            fs.invalidate_cache(folder)  # a listing cached earlier in this process may predate new objects
            return sorted(fs.ls(folder, detail=False))
        except NotImplementedError:
            return None


def open_stream_source(spec: DatasetSpec | Mapping[str, Any]) -> StreamSource:
    """Resolve a dataset entry's ``path`` (URL or local) to a :class:`StreamSource`, reading only metadata and the
    first row.

    Example:
        ::

            import os

            from st_contrast.data.stream_sources import open_stream_source

            os.environ["AWS_ENDPOINT_URL"] = "http://127.0.0.1:9000"  # an S3-compatible server (MinIO, moto)
            source = open_stream_source({"name": "pairs", "path": "s3://corpus/pairs/shard-{00000..00003}.jsonl.gz"})
            source.total_rows  # from counts.json
    """
    if not isinstance(spec, DatasetSpec):
        spec = DatasetSpec.from_dict(spec)
    register_image_storage(spec)
    paths = [spec.path] if isinstance(spec.path, str) else [str(path) for path in spec.path]
    fs, first = url_filesystem(paths[0], spec.storage_options)
    protocol = paths[0].split("://", 1)[0] + "://" if is_url(paths[0]) else ""

    def url_of(path: str) -> str:
        if not protocol:
            return path
        bare = path.split("://", 1)[-1]
        return protocol + bare.lstrip("/") if protocol != "file://" else "file://" + bare

    counts: dict[str, int] | None = None
    offsets_path = None
    names: list[str] = []
    if len(paths) == 1 and not local_glob.has_magic(first) and expand_braces(first) == [first] and _kind(first) is None:
        folder = first.rstrip("/")  # a folder: contrastors shards (counts.json) or data files
        listing = _listing(fs, folder, url_of(folder))
        if listing is None or not listing:
            raise DataError(f"Dataset {spec.name!r}: {url_of(folder)} holds no files (or does not exist).")
        metadata = (*_COUNTS_NAMES, *_OFFSETS_NAMES)
        data_files = [path for path in listing if _kind(path) and path.rsplit("/", 1)[-1] not in metadata]
        if any(_kind(path) == "tar" for path in data_files):  # the shards; img2dataset writes stats / parquet beside
            data_files = [path for path in data_files if _kind(path) == "tar"]
        candidates = _counts_names(data_files)
        counts_path = next((path for n in candidates if (path := posixpath.join(folder, n)) in listing), "")
        if counts_path:
            counts = _read_counts(fs, counts_path, url_of(counts_path))
            names = [path for path in listing if path.endswith((".jsonl.gz", ".jsonl", ".tar"))]
            offsets_path = next((p for p in listing if p.rsplit("/", 1)[-1] in _OFFSETS_NAMES), None)
        else:
            names = data_files
        if not names:
            raise DataError(
                f"Dataset {spec.name!r}: {url_of(folder)} has no JSON Lines, CSV, TSV, Parquet or tar files."
            )
    else:
        for path in paths:
            path_fs, inner = url_filesystem(path, spec.storage_options)
            names.extend(expand_url(path, path_fs, inner))
        folder = posixpath.dirname(names[0])
        candidates = _counts_names(names)
        counts_path = next(
            (path for n in candidates if _exists(fs, path := posixpath.join(folder, n), url_of(path))), ""
        )
        if counts_path:
            counts = _read_counts(fs, counts_path, url_of(counts_path))
            offsets_path = next(
                (posixpath.join(folder, n) for n in _OFFSETS_NAMES if _exists(fs, posixpath.join(folder, n), folder)),
                None,
            )
        _check_exist(fs, names, url_of, spec.name)

    files = []
    for path in names:
        kind = _kind(path)
        if kind is None:
            raise DataError(
                f"Dataset {spec.name!r}: {url_of(path)} is not a .jsonl / .csv / .tsv / .parquet / .tar file."
            )
        name = path.rsplit("/", 1)[-1]
        rows = counts.get(name) if counts is not None else None
        if counts is not None and rows is None and kind != "parquet":
            raise DataError(f"{url_of(counts_path)} has no count for {name}. Regenerate it (index_contrastors_shards).")
        files.append(StreamFile(url_of(path), path, kind, path.lower().endswith(".gz"), rows))
    kinds = {file.kind for file in files}
    if len(kinds) > 1:
        raise DataError(f"Dataset {spec.name!r} mixes file formats {sorted(kinds)}; give one format per dataset.")
    source = StreamSource(spec, fs, files, offsets_path, url_of)
    if files[0].kind == "parquet":
        _parquet_counts(source)
    return source


def _counts_names(paths: list[str]) -> tuple[str, ...]:
    """The row-count files to look for beside ``paths``: ``counts.json``, and open_clip's ``sizes.json`` for tar
    shards."""
    return _COUNTS_NAMES if paths and all(_kind(path) == "tar" for path in paths) else _COUNTS_NAMES[:1]


def _check_exist(fs: Any, names: list[str], url_of, dataset: str) -> None:
    """One listing per folder shows missing objects before training starts (skipped where listing is impossible)."""
    by_folder: dict[str, list[str]] = {}
    for path in names:
        by_folder.setdefault(posixpath.dirname(path), []).append(path)
    for folder, paths in by_folder.items():
        listing = _listing(fs, folder, url_of(folder))
        if listing is None:
            continue
        present = {path.rstrip("/") for path in listing}
        missing = [path for path in paths if path not in present]
        if missing:
            shown = ", ".join(url_of(path) for path in missing[:3])
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise DataError(f"Dataset {dataset!r}: no such file or object: {shown}{more}.")


def _parquet_counts(source: StreamSource) -> None:
    import pyarrow.parquet as pq

    for file in source.files:
        if file.rows is None:
            with reading(file.url), source.fs.open(file.path, "rb") as handle:
                file.rows = pq.ParquetFile(handle, pre_buffer=False).metadata.num_rows
