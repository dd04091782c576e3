"""One file of a streamed dataset, read from a given row: JSON Lines, CSV, TSV (gzip too), Parquet and webdataset tar
shards (:mod:`~st_contrast.data.stream_tar`) via fsspec.

Rows come out as ``(row, training row or BadRowError)``: the row number within the file, then the row mapped to the
training columns, or the error that names its URL and line. A gzip stream that ends early, or a file with fewer rows
than its count, yields one error per row it lost (reason ``truncated file``) so that row positions stay exact.
Seeking to a row uses the contrastors offsets when the source has them (a byte range read for plain files; for gzip
the decompressed bytes before it are skipped without parsing them), else the rows before it are skipped line by line.
"""

from __future__ import annotations

import gzip
import os
import posixpath
from collections.abc import Iterator
from typing import IO, Any

from st_contrast.data.columns import BadRowError, DataError
from st_contrast.data.contrastors import check_row_objective
from st_contrast.data.images import usable_image
from st_contrast.data.records import GZIP_ERRORS, LineCounter, iter_text_records
from st_contrast.data.stream_tar import iter_tar_records
from st_contrast.data.urls import is_url, open_url, reading

__all__ = ["iter_file_records", "iter_file_rows"]

_SKIP_CHUNK = 1 << 20
_BLOCK = 8 << 20  # bytes per storage request (s3fs would take 50 MiB): the first rows arrive sooner, memory stays low
_PARQUET_BATCH = 2048
Row = tuple[int, "dict[str, Any] | BadRowError"]


def iter_file_rows(source: Any, index: int, start: int = 0, stop: int | None = None) -> Iterator[Row]:
    """Rows ``start..stop-1`` of file ``index`` of ``source`` (a
    :class:`~st_contrast.data.stream_sources.StreamSource`; ``stop=None``: to the end), mapped to the training
    columns; bad rows as :class:`BadRowError`. Errors reading the file itself (missing, denied) raise a
    :class:`DataError` naming its URL."""
    file = source.files[index]
    for row, record, where in iter_file_records(source, file, start, stop):
        if isinstance(record, BadRowError):
            yield row, record
            continue
        try:
            check_row_objective(record, source.plan, source.objective, lambda where=where: where)
            if source.plan.image_sources:
                record = _with_image_references(source, file, record, where)
            yield row, source.plan.map_row(record, lambda where=where: where)
        except BadRowError as error:
            yield row, error


def _with_image_references(source: Any, file: Any, record: dict[str, Any], where: str) -> dict[str, Any]:
    """``record`` with its image cells as image references (paths relative to the file's folder or URL). With
    ``on_bad_rows: skip`` every image is read and decoded here, in the reader, so that a bad one is a skipped row and
    not an error when its batch is built; its bytes then travel with the row."""
    record = dict(record)
    folder = posixpath.dirname(file.url) if is_url(file.url) else os.path.dirname(os.path.abspath(file.path))
    decode = source.spec.on_bad_rows == "skip"
    for column in source.plan.image_sources:
        if column in record:  # else map_row names the missing column
            record[column] = usable_image(record[column], folder, where, column, decode)
    return record


def iter_file_records(
    source: Any, file: Any, start: int = 0, stop: int | None = None
) -> Iterator[tuple[int, dict[str, Any] | BadRowError, str]]:
    """``(row, record or BadRowError, where)`` for rows ``start..stop-1`` of ``file``: the raw records (all their
    fields), before column mapping."""
    if stop is not None and stop <= start:
        return
    reader = {"parquet": _parquet_records, "tar": iter_tar_records}.get(file.kind, _text_records)
    expected = stop if stop is not None else None
    row = start
    for row, record, where in reader(source, file, start, stop):  # noqa: B007
        yield row, record, where
        row += 1
        if isinstance(record, BadRowError) and record.reason.startswith("truncated file"):
            for lost in range(row, expected if expected is not None else row):
                yield lost, record, where
            return
    if expected is not None and row < expected:
        error = BadRowError(
            f"{file.url} ends after {row} rows, but its count says {file.rows}. Regenerate counts.json "
            "(index_contrastors_shards), or the file was cut short.",
            "truncated file",
        )
        for lost in range(row, expected):
            yield lost, error, file.url


def _text_records(source: Any, file: Any, start: int, stop: int | None):
    counter = LineCounter()
    raw = open_url(source.fs, file.path, file.url, block_size=_BLOCK)
    row = start
    try:
        with raw, reading(file.url):
            handle: IO[bytes] = gzip.GzipFile(fileobj=raw, mode="rb") if file.gzip else raw
            lines = counter.count(handle)
            first_line = 1
            if file.kind in ("csv", "tsv"):  # the header is line 1; records are counted after it
                header = next(lines, b"")
                lines = _prepend(header, lines)
            elif start:
                first_line = _seek_json(source, file, handle, start, counter) + 1
                counter.lines = first_line - 1
            records = iter_text_records(lines, file.kind, file.url, first_line)
            skipped = 0 if file.kind == "json" else start
            for line, record in records:
                if skipped:
                    skipped -= 1
                    continue
                if stop is not None and row >= stop:
                    return
                where = f"{file.url}, row {row} (line {line})"
                if isinstance(record, BadRowError):  # the parser knows the line; the row within the file is added
                    record = BadRowError(
                        str(record).replace(f"{file.url}, line {line}", where, 1), record.reason, record.rows
                    )
                yield row, record, where
                row += 1
    except GZIP_ERRORS as error:
        lost = " (rows unknown)" if stop is None else ""
        yield (
            row,
            BadRowError(
                f"{file.url}, after line {counter.lines}: the gzip stream is truncated or damaged ({error}). Replace "
                "the file (on_bad_rows: skip leaves out the rest of the file and counts its rows).",
                "truncated file" + lost,
            ),
            file.url,
        )


def _prepend(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


def _seek_json(source: Any, file: Any, handle: IO[bytes], start: int, counter: LineCounter) -> int:
    """Position ``handle`` at row ``start`` of a JSON Lines file; returns the number of lines before it."""
    offset = source.offset_of(file, start)
    if offset is None:  # no offsets: skip the rows before it, line by line (without parsing them)
        lines = rows = 0
        while rows < start:
            line = handle.readline()
            if not line:
                break
            lines += 1
            rows += bool(line.strip())
        return lines
    if file.gzip:
        remaining, last = offset, b"\n"
        while remaining:
            chunk = handle.read(min(remaining, _SKIP_CHUNK))
            if not chunk:
                break
            remaining -= len(chunk)
            last = chunk[-1:]
    else:
        handle.seek(max(offset - 1, 0))
        last = handle.read(1) if offset else b"\n"
    if last != b"\n":
        raise DataError(
            f"{file.url}: the offsets put row {start} at byte {offset}, which does not start a line. The offsets do "
            "not match the shard: regenerate them (index_contrastors_shards)."
        )
    return start


def _parquet_records(source: Any, file: Any, start: int, stop: int | None):
    import pyarrow.parquet as pq

    raw = open_url(source.fs, file.path, file.url, block_size=_BLOCK)
    with raw, reading(file.url):
        try:
            parquet = pq.ParquetFile(raw, pre_buffer=False)  # no Arrow I/O threads calling back into Python
        except Exception as error:  # not a Parquet file, or a damaged one
            raise DataError(f"{file.url}: cannot be read as Parquet ({type(error).__name__}: {error}).") from error
        first, row = 0, 0
        for group in range(parquet.num_row_groups):
            size = parquet.metadata.row_group(group).num_rows
            if row + size > start:
                break
            row += size
            first = group + 1
        groups = list(range(first, parquet.num_row_groups))
        if not groups:
            return
        for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH, row_groups=groups, use_threads=False):
            for record in batch.to_pylist():
                if row >= start:
                    if stop is not None and row >= stop:
                        return
                    yield row, record, f"{file.url}, row {row}"
                row += 1
