"""Opening local evaluation files: plain or gzip-compressed text, recognised by content, not by name."""

from __future__ import annotations

import gzip
import io
from pathlib import Path
from typing import TextIO

__all__ = ["find_data_file", "open_text"]

_GZIP_MAGIC = b"\x1f\x8b"


def open_text(path: str | Path) -> TextIO:
    """Open ``path`` for reading as UTF-8 text, decompressing it when it is gzip (whatever its suffix).

    ``newline=""`` keeps line endings inside quoted fields intact, as the ``csv`` module requires.
    """
    path = Path(path)
    with path.open("rb") as handle:
        compressed = handle.read(2) == _GZIP_MAGIC
    if compressed:
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open(encoding="utf-8", newline="")


def find_data_file(directory: Path, stem: str, suffixes: tuple[str, ...]) -> Path | None:
    """The first of ``directory/stem + suffix`` (each suffix also tried with ``.gz``) that exists, else None."""
    for suffix in suffixes:
        for candidate in (directory / f"{stem}{suffix}", directory / f"{stem}{suffix}.gz"):
            if candidate.is_file():
                return candidate
    return None
