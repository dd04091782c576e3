"""Text data files line by line: JSON Lines, CSV and TSV records with their line numbers, bad ones named.

The same parser serves every path that needs a row's exact line: the streamed datasets (each line parsed as it
arrives), ``on_bad_rows: skip`` on local files (bad lines left out and counted), and the error of a local file that
``datasets`` could not read (the first bad line located). A record is a ``dict`` of the line's fields; a bad one is a
:class:`~st_contrast.data.columns.BadRowError` whose message names the file and line and whose ``reason`` is one of
``not UTF-8``, ``malformed JSON``, ``not a JSON object``, ``wrong number of fields``.
"""

from __future__ import annotations

import csv
import gzip
import json
import zlib
from collections.abc import Iterable, Iterator
from typing import Any

from st_contrast.data.columns import BadRowError

__all__ = ["GZIP_ERRORS", "TEXT_FORMATS", "LineCounter", "iter_text_records", "scan_text_records", "text_format"]

#: Record formats by file suffix (``.gz`` stripped first): JSON Lines, comma- and tab-separated values.
TEXT_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".tsv": "tsv"}

#: What a damaged or truncated gzip stream raises while it is read.
GZIP_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile)


def text_format(name: str) -> str | None:
    """``json`` / ``csv`` / ``tsv`` for a file name or URL (``.gz`` allowed), else None."""
    name = name.lower().split("?", 1)[0]
    name = name.removesuffix(".gz")
    return next((kind for suffix, kind in TEXT_FORMATS.items() if name.endswith(suffix)), None)


def _decode(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf8")
    except UnicodeDecodeError as bad:
        raise BadRowError(
            f"{where}: byte 0x{raw[bad.start]:02x} at column {bad.start + 1} is not UTF-8. Re-encode the file as "
            "UTF-8, or fix or remove the line.",
            "not UTF-8",
        ) from None


def _json_record(raw: bytes, where: str) -> dict[str, Any]:
    text = _decode(raw, where)
    try:
        record = json.loads(text)
    except json.JSONDecodeError as bad:
        raise BadRowError(f"{where}: malformed JSON ({bad.msg}). Fix or remove the line.", "malformed JSON") from None
    if not isinstance(record, dict):
        raise BadRowError(f"{where}: expected a JSON object, got {type(record).__name__}.", "not a JSON object")
    return record


def _split(text: str, kind: str) -> list[str]:
    if kind == "tsv":  # unquoted, as TSV corpora are written (a stray quote is text)
        return next(csv.reader([text], delimiter="\t", quoting=csv.QUOTE_NONE), [])
    return next(csv.reader([text]), [])


def iter_text_records(
    lines: Iterable[bytes], kind: str, name: str, first_line: int = 1
) -> Iterator[tuple[int, dict[str, Any] | BadRowError]]:
    """``(line number, record or BadRowError)`` for each record of a text file's lines (newlines kept).

    JSON Lines: one object per line; blank lines are not records. CSV / TSV: the first line is the header and every
    other line a record with as many fields (a quoted CSV field may span lines; TSV is unquoted). A gzip stream that
    ends early raises from the ``lines`` iterator; the caller names it (see :data:`GZIP_ERRORS`).

    Args:
        lines: The file's lines as bytes, e.g. an open binary file.
        kind: ``json``, ``csv`` or ``tsv`` (see :func:`text_format`); ``text`` checks only the encoding.
        name: The file or URL, for messages.
        first_line: The number of the first line in ``lines``.
    """
    header: list[str] | None = None
    pending: list[bytes] = []
    start = first_line
    for number, raw in enumerate(lines, start=first_line):
        if kind == "text":  # only the encoding is checked (a JSON document spread over lines)
            try:
                _decode(raw, f"{name}, line {number}")
            except BadRowError as error:
                yield number, error
            continue
        if kind == "json":
            if raw.strip():
                try:
                    yield number, _json_record(raw, f"{name}, line {number}")
                except BadRowError as error:
                    yield number, error
            continue
        if not pending:
            start = number
        pending.append(raw)
        where = f"{name}, line {start}"
        try:
            text = _decode(b"".join(pending), where)
        except BadRowError as error:
            pending = []
            if header is None:
                raise
            yield start, error
            continue
        if kind == "csv" and text.count('"') % 2:  # inside a quoted field: the record continues on the next line
            continue
        pending = []
        if not text.strip():
            continue
        fields = _split(text.rstrip("\r\n"), kind)
        if header is None:
            header = fields
            continue
        if len(fields) != len(header):
            yield (
                start,
                BadRowError(
                    f"{where}: {len(fields)} fields, but the header has {len(header)} ({header}). "
                    "Fix or remove the line.",
                    "wrong number of fields",
                ),
            )
            continue
        yield start, dict(zip(header, fields, strict=True))
    if pending and header is not None:
        yield start, BadRowError(f"{name}, line {start}: a quoted field is never closed.", "wrong number of fields")


class LineCounter:
    """Counts the lines that pass through :meth:`count` (the last complete line before a damaged gzip stream)."""

    def __init__(self) -> None:
        self.lines = 0

    def count(self, lines: Iterable[bytes]) -> Iterator[bytes]:
        for line in lines:
            self.lines += 1
            yield line


def scan_text_records(path: str, kind: str) -> str | None:
    """The first problem of a local text file (a bad line, or a damaged gzip stream), named with file and line;
    None when every record reads."""
    opener = gzip.open if path.lower().endswith(".gz") else open
    counter = LineCounter()
    try:
        with opener(path, "rb") as handle:
            for _, record in iter_text_records(counter.count(handle), kind, path):
                if isinstance(record, BadRowError):
                    return str(record)
    except BadRowError as error:
        return str(error)
    except GZIP_ERRORS as bad:
        return f"{path}: the gzip stream is truncated or damaged after line {counter.lines} ({bad})."
    except OSError as bad:
        return f"{path}: cannot be read ({bad})."
    return None
