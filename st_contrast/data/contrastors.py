"""contrastors-style shard folders: ``*.jsonl.gz`` shards, ``counts.json`` and ``offsets.json.gz``, read lazily.

Layout (as in nomic-ai/contrastors): every shard is gzipped JSON Lines, one example per line. ``counts.json`` maps
each shard to its number of lines (directly, or under ``"count_per_file"``); ``offsets.json.gz`` maps each shard
to ``{"<row>": [start, end]}``, the byte range of the row's line in the decompressed shard. Keys may be bare file
names or bucket paths (``bucket/dataset/shard-00000.jsonl.gz``): they are matched by file name.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import datasets

from st_contrast.data.columns import ColumnPlan, DataError, plan_columns
from st_contrast.data.spec import DatasetSpec
from st_contrast.data.urls import expand_braces

__all__ = ["expand_braces", "index_contrastors_shards", "load_contrastors_shards"]

_SHARD_SUFFIXES = (".jsonl.gz", ".jsonl")
_OFFSETS_NAMES = ("offsets.json.gz", "offsets.json")


def _open_shard(path: str) -> IO[bytes]:
    """Open one shard for reading (a seam the tests spy on to prove shards are read one at a time)."""
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")  # noqa: SIM115


def _shards(directory: Path, only: list[str] | None = None) -> list[Path]:
    shards = sorted(path for path in directory.iterdir() if path.name.endswith(_SHARD_SUFFIXES))
    if only is not None:
        missing = sorted(set(only) - {shard.name for shard in shards})
        if missing:
            raise DataError(f"{directory}: shard(s) {missing[:5]} not found.")
        shards = [shard for shard in shards if shard.name in set(only)]
    if not shards:
        raise DataError(f"{directory}: no shard files ({' or '.join(_SHARD_SUFFIXES)}) found beside counts.json.")
    return shards


def _by_file_name(mapping: Mapping[str, Any], source: Path) -> dict[str, Any]:
    named: dict[str, Any] = {}
    for key, value in mapping.items():
        name = key.rstrip("/").rsplit("/", 1)[-1]
        if name in named:
            raise DataError(f"{source}: two entries for shard {name!r}; keep one per file name.")
        named[name] = value
    return named


def _read_counts(directory: Path, shards: list[Path], strict: bool = True) -> dict[str, int]:
    path = directory / "counts.json"
    try:
        counts = json.loads(path.read_text(encoding="utf8"))
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: malformed JSON ({error}).") from error
    if isinstance(counts, dict) and isinstance(counts.get("count_per_file"), dict):
        counts = counts["count_per_file"]
    if not isinstance(counts, dict) or not all(isinstance(value, int) for value in counts.values()):
        raise DataError(f"{path}: expected {{shard file: row count}} (or under 'count_per_file').")
    counts = _by_file_name(counts, path)
    missing = [shard.name for shard in shards if shard.name not in counts]
    if missing:
        raise DataError(f"{path} has no count for shard(s) {missing}. Regenerate it (index_contrastors_shards).")
    extra = sorted(set(counts) - {shard.name for shard in shards})
    if extra and strict:
        raise DataError(f"{path} counts shard(s) {extra} that are not in {directory}.")
    return counts


def iter_object_items(handle: IO[str], where: str, chunk: int = 1 << 20) -> Iterator[tuple[str, Any]]:
    """The ``(key, value)`` pairs of a top-level JSON object, parsed one value at a time (bounded memory)."""
    decoder = json.JSONDecoder()
    buffer, position = "", 0

    def more(size: int) -> bool:
        nonlocal buffer, position
        data = handle.read(size)
        buffer, position = buffer[position:] + data, 0
        return bool(data)

    def skip_space() -> str:
        nonlocal position
        while True:
            while position < len(buffer) and buffer[position].isspace():
                position += 1
            if position < len(buffer):
                return buffer[position]
            if not more(chunk):
                raise DataError(f"{where}: truncated JSON.")

    def value() -> Any:
        nonlocal position
        size = chunk
        while True:
            try:
                parsed, end = decoder.raw_decode(buffer, position)
                position = end
                return parsed
            except json.JSONDecodeError as error:
                if not more(max(size, len(buffer))):
                    raise DataError(f"{where}: malformed JSON ({error.msg}).") from error
                size *= 2

    if skip_space() != "{":
        raise DataError(f"{where}: expected a JSON object {{shard: {{row: [start, end]}}}}.")
    position += 1
    if skip_space() == "}":
        return
    while True:
        skip_space()
        key = value()
        if skip_space() != ":":
            raise DataError(f"{where}: malformed JSON after key {key!r}.")
        position += 1
        skip_space()
        yield key, value()
        separator = skip_space()
        position += 1
        if separator == "}":
            return
        if separator != ",":
            raise DataError(f"{where}: malformed JSON after the entry of {key!r}.")


def _offsets_path(directory: Path) -> Path | None:
    return next((directory / name for name in _OFFSETS_NAMES if (directory / name).is_file()), None)


def _iter_offsets(path: Path) -> Iterator[tuple[str, Any]]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf8") as handle:
        seen: set[str] = set()
        for key, value in iter_object_items(handle, str(path)):
            name = key.rstrip("/").rsplit("/", 1)[-1]
            if name in seen:
                raise DataError(f"{path}: two entries for shard {name!r}.")
            seen.add(name)
            yield name, value


def offset_entry(offsets: Any, row: int) -> Any:
    if isinstance(offsets, dict):
        return offsets.get(str(row))
    return offsets[row] if row < len(offsets) else None


def _read_shard(shard: Path, plan: ColumnPlan, objective: str | None, offsets: Any, expected: int, limit: int | None):
    """The training rows of one shard, every line checked against its offsets; ``(rows, complete)`` generator."""
    row, position = -1, 0
    try:
        with _open_shard(str(shard)) as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():  # blank lines are no rows (as the stream reads them and the index counts them)
                    position += len(line)
                    continue
                row += 1
                if limit is not None and row >= limit:
                    return

                def where(row: int = row, number: int = number) -> str:
                    return f"{shard}, row {row} (line {number})"

                if offsets is not None:
                    entry = offset_entry(offsets, row)
                    body = len(line.rstrip(b"\r\n"))
                    if not (isinstance(entry, (list, tuple)) and len(entry) == 2):
                        raise DataError(f"{where()}: the offsets have no [start, end] entry for this row.")
                    if entry[0] != position or entry[1] not in (position + len(line), position + body):
                        raise DataError(
                            f"{where()}: offsets say bytes {entry[0]}..{entry[1]}, but the line is at "
                            f"{position}..{position + len(line)}. The offsets do not match the shard: regenerate "
                            "them (index_contrastors_shards)."
                        )
                position += len(line)
                try:
                    data = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError) as error:
                    raise DataError(f"{where()}: malformed JSON ({error}). Fix or remove the line.") from error
                if not isinstance(data, dict):
                    raise DataError(f"{where()}: expected a JSON object, got {type(data).__name__}.")
                check_row_objective(data, plan, objective, where)
                yield plan.map_row(data, where)
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{shard}, after row {row}: unreadable shard ({error}); it may be truncated.") from error
    count = row + 1
    if count != expected:
        raise DataError(f"{shard} has {count} rows, but counts.json says {expected}. Regenerate counts.json.")
    if offsets is not None and len(offsets) != count:
        raise DataError(f"{shard} has {count} rows, but the offsets list {len(offsets)}. Regenerate the offsets.")


def check_row_objective(data: dict, plan: ColumnPlan, objective: str | None, where) -> None:
    """contrastors rows may list the column sets valid for each objective: the configured one must be among them."""
    valid = data.get("metadata", {}).get("objective", {}) if isinstance(data.get("metadata"), dict) else {}
    if objective and isinstance(valid, dict) and objective in valid:
        if plan.sources not in [list(columns) for columns in valid[objective]]:
            raise DataError(
                f"{where()}: columns {plan.sources} are not valid for objective {objective!r}; the row allows "
                f"{valid[objective]}."
            )


def _generate(
    directory: str, plan: ColumnPlan, objective: str | None, max_rows: int | None, only: Any, fingerprint: str
):
    del fingerprint  # only part of the cache key
    root = Path(directory)
    only = json.loads(only)
    shards = {shard.name: shard for shard in _shards(root, only)}
    counts = _read_counts(root, list(shards.values()), strict=only is None)
    offsets_path = _offsets_path(root)
    entries = _iter_offsets(offsets_path) if offsets_path else ((name, None) for name in sorted(shards))
    done: set[str] = set()
    total = 0
    for name, offsets in entries:
        if name not in shards:
            if only is not None:
                continue  # a shard the spec did not select
            raise DataError(f"{offsets_path} lists shard {name!r}, which is not in {root}.")
        left = None if max_rows is None else max_rows - total
        for row in _read_shard(shards[name], plan, objective, offsets, counts[name], left):
            total += 1
            yield row
        done.add(name)
        if max_rows is not None and total >= max_rows:
            return
    missing = sorted(set(shards) - done)
    if missing:
        raise DataError(f"{offsets_path} has no offsets for shard(s) {missing}. Regenerate (index_contrastors_shards).")


def _glob_names(directory: Path, pattern: str) -> list[str]:
    return sorted(path.name for path in directory.glob(pattern)) if glob.has_magic(pattern) else [pattern]


def _first_row(shard: Path) -> dict[str, Any]:
    with _open_shard(str(shard)) as handle:
        line = handle.readline()
    try:
        data = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{shard}, row 0 (line 1): malformed JSON ({error}).") from error
    if not isinstance(data, dict):
        raise DataError(f"{shard}, row 0 (line 1): expected a JSON object.")
    return data


def load_contrastors_shards(
    directory: str | os.PathLike,
    spec: DatasetSpec | Mapping[str, Any] | None = None,
    cache_dir: str | None = None,
    writer_batch_size: int = 1000,
) -> datasets.Dataset:
    """A contrastors shard folder as a memory-mapped ``datasets.Dataset``, streamed one shard at a time.

    The rows go through ``Dataset.from_generator`` into an Arrow file in the ``datasets`` cache, ``writer_batch_size``
    rows at a time, so a corpus larger than memory loads; the result is memory-mapped. Shards are read in the order
    of ``offsets.json.gz`` (whose entries are parsed one shard at a time too), every line checked against its byte
    offsets and every shard against ``counts.json``; a bad line raises a :class:`DataError` naming shard and row.
    The cache key includes the files' sizes and modification times, so edited shards are read again.

    Args:
        directory: The folder with the shards, ``counts.json`` and ``offsets.json.gz`` (optional: without it rows are
            not checked against offsets), or a contrastors ``bucket`` pattern of some of its shards
            (``folder/shard-{00000..00003}.jsonl.gz``, globs too).
        spec: Column selection, objective and ``max_rows`` (a :class:`DatasetSpec` or mapping; ``name`` and
            ``path`` may be left out). Default: contrastors ``paired`` columns ``query``/``document``.
        cache_dir: The ``datasets`` cache folder.
        writer_batch_size: Rows buffered before they are written to the Arrow file.
    """
    root = Path(directory)
    if spec is None:
        spec = DatasetSpec(name=root.name, path=str(root), objective="paired")
    elif not isinstance(spec, DatasetSpec):
        spec = DatasetSpec.from_dict({"name": root.name, "path": str(root), **spec})
    only = None
    if root.name.endswith(_SHARD_SUFFIXES) or not root.is_dir():  # a contrastors bucket pattern: folder + shards
        only = [name for pattern in expand_braces(root.name) for name in _glob_names(root.parent, pattern)]
        root = root.parent
    shards = _shards(root, only)
    _read_counts(root, shards, strict=only is None)
    first = _first_row(shards[0])
    plan = plan_columns(spec, list(first), first, f"{shards[0]}, row 0")
    # A string, not a list: datasets would split list-valued gen_kwargs into several generator calls.
    fingerprint = json.dumps(
        [
            (path.name, path.stat().st_size, path.stat().st_mtime_ns)
            for path in [*shards, root / "counts.json", *filter(None, [_offsets_path(root)])]
        ]
    )
    features = None
    if plan.label_source is None:
        features = datasets.Features({column: datasets.Value("string") for column in plan.output_columns})
    try:
        return _from_generator(root, plan, spec, only, fingerprint, features, cache_dir, writer_batch_size)
    except datasets.exceptions.DatasetGenerationError as error:
        cause = error.__cause__ or error.__context__
        if isinstance(cause, DataError):  # datasets wraps the generator's errors: surface ours unchanged
            raise DataError(str(cause)) from None
        raise


def _from_generator(root, plan, spec, only, fingerprint, features, cache_dir, writer_batch_size) -> datasets.Dataset:
    return datasets.Dataset.from_generator(
        _generate,
        features=features,
        cache_dir=cache_dir,
        writer_batch_size=writer_batch_size,
        gen_kwargs={
            "directory": str(root.resolve()),
            "plan": plan,
            "objective": spec.objective,
            "max_rows": spec.max_rows,
            "only": json.dumps(only),  # strings: datasets splits list-valued gen_kwargs across generator calls
            "fingerprint": fingerprint,
        },
    )


def index_contrastors_shards(directory: str | os.PathLike) -> dict[str, int]:
    """Write ``counts.json`` and ``offsets.json.gz`` for the shards of ``directory``; returns the counts.

    Offsets are byte ranges ``[start, end)`` of each line (newline included) in the decompressed shard, keyed by the
    row number as a string, the layout contrastors reads. Blank lines are no rows: neither counted nor given offsets,
    as every reader here skips them.
    """
    root = Path(directory)
    counts: dict[str, int] = {}
    with gzip.open(root / "offsets.json.gz", "wt", encoding="utf8") as out:
        out.write("{")
        for number, shard in enumerate(_shards(root)):
            position, offsets = 0, {}
            with _open_shard(str(shard)) as handle:
                for line in handle:
                    if line.strip():  # blank lines are no rows: row k is the k-th line with a record
                        offsets[str(len(offsets))] = [position, position + len(line)]
                    position += len(line)
            counts[shard.name] = len(offsets)
            out.write(("," if number else "") + json.dumps(shard.name) + ":" + json.dumps(offsets))
        out.write("}")
    (root / "counts.json").write_text(
        json.dumps({"count_per_file": counts, "total_count": sum(counts.values())}), encoding="utf8"
    )
    return counts
