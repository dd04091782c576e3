"""Load one :class:`DatasetSpec` as a ``datasets.Dataset``: hub ids, ``save_to_disk`` folders, data files, shards."""

from __future__ import annotations

import csv
import glob
import gzip
import json
import os
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.compute as pc

from st_contrast.data.columns import ColumnPlan, DataError, plan_columns
from st_contrast.data.images import IMAGE_REFERENCE, reference_image_columns
from st_contrast.data.spec import DatasetSpec

__all__ = ["DATA_FILE_FORMATS", "load_dataset_spec"]

#: file suffix -> (``datasets`` builder, builder keyword arguments)
DATA_FILE_FORMATS: dict[str, tuple[str, dict[str, Any]]] = {
    ".parquet": ("parquet", {}),
    ".jsonl": ("json", {}),
    ".json": ("json", {}),
    ".csv": ("csv", {"na_filter": False}),
    # TSV: no quoting (a stray quote is text), and "NA"/"" stay strings so the empty-text check sees them.
    ".tsv": ("csv", {"delimiter": "\t", "quoting": csv.QUOTE_NONE, "na_filter": False}),
}


def _suffix(path: str) -> str | None:
    name = path.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return next((suffix for suffix in DATA_FILE_FORMATS if name.endswith(suffix)), None)


def _expand_files(patterns: Sequence[str], name: str) -> list[str]:
    files: list[str] = []
    for pattern in patterns:
        pattern = os.path.expanduser(pattern)
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        matches = [match for match in matches if os.path.isfile(match)]
        if not matches:
            raise DataError(f"Dataset {name!r}: no file matches {pattern!r}.")
        files.extend(matches)
    return files


class _Source:
    """Where rows come from, to name the file and row of bad data."""

    def __init__(self, description: str, files: list[tuple[str, int]] | None = None, folder: str | None = None) -> None:
        self.description = description
        self.files = files or []
        self.folder = folder

    def base_dir(self, row: int) -> str | None:
        """The folder that relative image paths of ``row`` are relative to: its data file's (or the dataset's)."""
        offset = 0
        for file, count in self.files:
            if row < offset + count:
                return os.path.dirname(os.path.abspath(file))
            offset += count
        return self.folder

    def where(self, row: int) -> str:
        offset = 0
        for file, count in self.files:
            if row < offset + count:
                return f"{file}, row {row - offset} (data line {row - offset + 1})"
            offset += count
        return f"{self.description}, row {row}"


def load_dataset_spec(spec: DatasetSpec | Mapping[str, Any], cache_dir: str | None = None) -> datasets.Dataset:
    """Load ``spec`` as a ``datasets.Dataset`` with its training columns, checked for bad data.

    The result holds the text columns in order (``anchor``/``positive``/``negative...`` with an objective) and
    ``label`` when ``spec.label_column`` is set. A missing column, an empty or non-text value, a malformed file or a
    shard whose ``counts.json`` / offsets do not match raises a :class:`DataError` naming the file and row.

    Args:
        spec: A :class:`DatasetSpec` or a mapping of its fields.
        cache_dir: The ``datasets`` cache folder (default: the Hugging Face cache).

    Example:
        ::

            from st_contrast.data import load_dataset_spec

            triplets = load_dataset_spec({"name": "nli", "path": "nli/triplets.tsv.gz", "objective": "triplet"})
    """
    if not isinstance(spec, DatasetSpec):
        spec = DatasetSpec.from_dict(spec)
    paths = [spec.path] if isinstance(spec.path, (str, os.PathLike)) else list(spec.path)
    paths = [str(path) for path in paths]
    first = os.path.expanduser(paths[0])

    if len(paths) == 1 and first.endswith(".jsonl.gz") and (Path(first).parent / "counts.json").is_file():
        from st_contrast.data.contrastors import load_contrastors_shards  # a contrastors bucket pattern

        return load_contrastors_shards(first, spec=spec, cache_dir=cache_dir)
    if len(paths) == 1 and os.path.isdir(first):
        directory = Path(first)
        if (directory / "counts.json").is_file():
            from st_contrast.data.contrastors import load_contrastors_shards

            return load_contrastors_shards(directory, spec=spec, cache_dir=cache_dir)
        if (directory / "dataset_dict.json").is_file() or (directory / "state.json").is_file():
            dataset, source = _load_from_disk(directory, spec), _Source(str(directory), folder=str(directory))
        else:
            dataset = _load_builder(str(directory), spec, cache_dir)
            source = _Source(str(directory), folder=str(directory))
    elif any(glob.has_magic(path) or os.path.exists(os.path.expanduser(path)) for path in paths):
        files = _expand_files(paths, spec.name)
        if all(file.lower().endswith(".tar") for file in files):
            from st_contrast.data.image_shards import load_image_shards

            dataset, counts = load_image_shards(files, spec.name, spec.max_rows)
            shown = files[0] if len(files) == 1 else f"{files[0]} and {len(files) - 1} more shard(s)"
            source = _Source(shown, counts)
        else:
            dataset, source = _load_files(files, spec, cache_dir)
    elif len(paths) == 1 and (first.startswith((".", "/", "~")) or _suffix(first)):
        raise DataError(f"Dataset {spec.name!r}: {paths[0]!r} does not exist.")
    else:
        dataset, source = _load_hub(paths[0], spec, cache_dir), _Source(f"hub dataset {paths[0]!r}")
    try:
        return _prepare(dataset, spec, source)
    except (pa.ArrowInvalid, UnicodeDecodeError) as error:  # e.g. bytes that are not UTF-8 inside JSON strings
        problems = [problem for file, _ in source.files if (problem := _scan_text_file(file, "json"))]
        raise DataError(f"Dataset {spec.name!r}: {problems[0] if problems else error}") from error


def _load_from_disk(directory: Path, spec: DatasetSpec) -> datasets.Dataset:
    loaded = datasets.load_from_disk(str(directory))
    if isinstance(loaded, datasets.DatasetDict):
        if spec.split not in loaded:
            raise DataError(
                f"Dataset {spec.name!r}: {directory} has splits {sorted(loaded)}, not {spec.split!r}; set 'split'."
            )
        loaded = loaded[spec.split]
    return loaded


def _load_builder(directory: str, spec: DatasetSpec, cache_dir: str | None) -> datasets.Dataset:
    try:
        return datasets.load_dataset(directory, spec.subset, split=spec.split, cache_dir=cache_dir, **spec.load_kwargs)
    except Exception as error:
        raise DataError(f"Dataset {spec.name!r}: could not load the folder {directory}: {error}") from error


def _load_hub(path: str, spec: DatasetSpec, cache_dir: str | None) -> datasets.Dataset:
    try:
        return datasets.load_dataset(path, spec.subset, split=spec.split, cache_dir=cache_dir, **spec.load_kwargs)
    except Exception as error:
        raise DataError(
            f"Dataset {spec.name!r}: {path!r} is no local file or folder, and loading it as a Hugging Face hub "
            f"dataset failed ({type(error).__name__}: {error}). Check the path, or the hub id, split "
            f"{spec.split!r}, subset {spec.subset!r} and the network (HF_HUB_OFFLINE)."
        ) from error


def _load_files(files: list[str], spec: DatasetSpec, cache_dir: str | None) -> tuple[datasets.Dataset, _Source]:
    suffixes = {file: _suffix(file) for file in files}
    unknown = [file for file, suffix in suffixes.items() if suffix is None]
    if unknown:
        raise DataError(
            f"Dataset {spec.name!r}: unsupported file type {unknown[:3]}; use {sorted(DATA_FILE_FORMATS)} (or .gz)."
        )
    builders = {DATA_FILE_FORMATS[suffix][0] for suffix in suffixes.values()}
    if len(builders) > 1:
        raise DataError(f"Dataset {spec.name!r} mixes file formats {sorted(builders)}; give one format per dataset.")
    parts, counts = [], []
    for file in files:
        builder, kwargs = DATA_FILE_FORMATS[suffixes[file]]
        try:
            with _quiet_datasets():
                part = datasets.load_dataset(
                    builder, data_files=file, split="train", cache_dir=cache_dir, **{**kwargs, **spec.load_kwargs}
                )
        except Exception as error:
            raise DataError(f"Dataset {spec.name!r}: {_describe_file_error(file, builder, error)}") from error
        parts.append(part)
        counts.append((file, len(part)))
        if spec.max_rows is not None and sum(count for _, count in counts) >= spec.max_rows:
            break
    try:
        dataset = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    except ValueError as error:
        raise DataError(f"Dataset {spec.name!r}: its files do not share columns and types: {error}") from error
    shown = files[0] if len(files) == 1 else f"{files[0]} and {len(files) - 1} more file(s)"
    return dataset, _Source(shown, counts)


@contextmanager
def _quiet_datasets() -> Iterator[None]:
    """No progress bars and no logged error from ``datasets`` while a file loads: a failure becomes one DataError."""
    bars = datasets.utils.is_progress_bar_enabled()
    level = datasets.utils.logging.get_verbosity()
    datasets.utils.disable_progress_bars()
    datasets.utils.logging.set_verbosity(datasets.utils.logging.CRITICAL)
    try:
        yield
    finally:
        datasets.utils.logging.set_verbosity(level)
        if bars:
            datasets.utils.enable_progress_bars()


def _describe_file_error(file: str, builder: str, error: Exception) -> str:
    """The error of a file that ``datasets`` could not read, located to a line where the file itself is at fault."""
    if builder != "parquet" and (problem := _scan_text_file(file, builder)):
        return problem
    cause = error.__cause__ or error.__context__ or error
    if "EmptyDataError" in type(cause).__name__ or Path(file).stat().st_size == 0:
        return f"{file}: the file is empty (no header, no rows)."
    if "corresponds to no data" in str(cause):
        return f"{file}: the file has a header but no rows."
    return f"{file}: cannot be read as {builder} ({type(cause).__name__}: {cause})."


def _scan_text_file(file: str, builder: str) -> str | None:
    """Read a text data file line by line: a truncated gzip stream, bytes that are not UTF-8 or (JSON Lines) a
    malformed line, named with the file and line number; None when every line reads."""
    opener = gzip.open if file.lower().endswith(".gz") else open
    json_lines = builder == "json" and not file.lower().removesuffix(".gz").endswith(".json")
    number = 0
    try:
        with opener(file, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    line = raw.decode("utf8")
                except UnicodeDecodeError as bad:
                    return (
                        f"{file}, line {number}: byte 0x{raw[bad.start]:02x} at column {bad.start + 1} is not UTF-8. "
                        "Re-encode the file as UTF-8, or fix or remove the line."
                    )
                if json_lines and line.strip():
                    try:
                        json.loads(line)
                    except json.JSONDecodeError as bad:
                        return f"{file}, line {number}: malformed JSON ({bad.msg}). Fix or remove the line."
    except (EOFError, gzip.BadGzipFile, zlib.error) as bad:
        return f"{file}: the gzip stream is truncated or damaged after line {number} ({bad})."
    except OSError as bad:
        return f"{file}: cannot be read ({bad})."
    return None


def _prepare(dataset: datasets.Dataset, spec: DatasetSpec, source: _Source) -> datasets.Dataset:
    if spec.max_rows is not None and len(dataset) > spec.max_rows:
        dataset = dataset.select(range(spec.max_rows))
    if len(dataset) == 0:
        raise DataError(f"Dataset {spec.name!r} ({source.description}) has no rows.")
    first_row = dataset[0]
    plan = plan_columns(spec, list(dataset.column_names), first_row, f"dataset {spec.name!r} ({source.description})")
    images = _image_targets(spec, plan, source, dataset.features)
    if plan.negatives_source is not None:
        if images:
            raise DataError(
                f"Dataset {spec.name!r}: image columns cannot be a list of negatives; list them one by one."
            )
        dataset = _map_with_rows(dataset, plan, source)
    else:
        dataset = dataset.select_columns([*plan.sources, *([plan.label_source] if plan.label_source else [])])
        renames = {s: t for s, t in zip(plan.sources, plan.targets, strict=True) if s != t}
        if plan.label_source and plan.label_source != "label":
            renames[plan.label_source] = "label"
        if renames:
            dataset = dataset.rename_columns(renames)
        dataset = dataset.select_columns(plan.output_columns)
        pending = [column for column in images if dataset.features[column] != IMAGE_REFERENCE]
        if pending:
            dataset = reference_image_columns(dataset, pending, source.base_dir, source.where, spec.name)
        _check_texts(dataset, [column for column in plan.text_columns if column not in images], source)
    return dataset


def _image_targets(spec: DatasetSpec, plan: ColumnPlan, source: _Source, features: datasets.Features) -> list[str]:
    """The training names of the image columns: ``spec.image_columns`` (source names) and columns that already hold
    image references (a tar shard's ``image``)."""
    named = [*spec.image_columns, *(name for name in plan.sources if features.get(name) == IMAGE_REFERENCE)]
    unknown = [column for column in named if column not in plan.sources]
    if unknown:
        raise DataError(
            f"Dataset {spec.name!r} ({source.description}): image_columns {unknown} are not among its training "
            f"columns {plan.sources}."
        )
    return [target for source_name, target in zip(plan.sources, plan.targets, strict=True) if source_name in named]


def _map_with_rows(dataset: datasets.Dataset, plan: ColumnPlan, source: _Source) -> datasets.Dataset:
    def convert(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        return plan.map_batch(batch, indices[0], source.where)

    return dataset.map(
        convert,
        batched=True,
        with_indices=True,
        remove_columns=dataset.column_names,
        desc=f"Expanding the negatives of {plan.dataset}",
    )


def _check_texts(dataset: datasets.Dataset, columns: list[str], source: _Source) -> None:
    """Every text cell is a non-blank string, checked column-wise in Arrow (memory-mapped, chunk by chunk)."""
    for column in columns:
        kind = dataset.features[column]
        if not (isinstance(kind, datasets.Value) and kind.dtype in ("string", "large_string")):
            if isinstance(kind, datasets.Value) and kind.dtype == "null":
                raise DataError(f"{source.where(0)}: column {column!r} is empty (all null).")
            raise DataError(
                f"Dataset {source.description}: column {column!r} holds {kind}, not text. Select text columns "
                "with 'columns' (and a score with 'label_column')."
            )
    arrow = dataset.with_format("arrow")
    offset = 0
    for table in arrow.iter(batch_size=100_000):
        for column in columns:
            values = table.column(column)
            blank = pc.or_kleene(
                pc.is_null(values), pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(values)), pa.scalar(0))
            )
            blank = pc.fill_null(blank, True)
            if pc.any(blank).as_py():
                row = offset + pc.index(blank, True).as_py()
                what = "is missing (null)" if values[row - offset].as_py() is None else "is empty"
                raise DataError(f"{source.where(row)}: column {column!r} {what}. Remove or fix the row.")
        offset += table.num_rows
