"""Load one :class:`DatasetSpec` as a ``datasets.Dataset``: hub ids, ``save_to_disk`` folders, data files, shards."""

from __future__ import annotations

import csv
import glob
import gzip
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from st_contrast.data.bad_rows import BadRows
from st_contrast.data.columns import BadRowError, ColumnPlan, DataError, plan_columns
from st_contrast.data.image_checks import bad_image_rows
from st_contrast.data.images import (
    IMAGE_REFERENCE,
    reference_image_columns,
    register_image_storage,
)
from st_contrast.data.quiet import quiet_datasets
from st_contrast.data.records import scan_text_records, text_format
from st_contrast.data.spec import DatasetSpec
from st_contrast.data.urls import is_url

__all__ = ["DATA_FILE_FORMATS", "load_dataset_spec"]

logger = logging.getLogger(__name__)

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


def load_dataset_spec(
    spec: DatasetSpec | Mapping[str, Any], cache_dir: str | None = None, bad_rows: BadRows | None = None
) -> datasets.Dataset:
    """Load ``spec`` as a ``datasets.Dataset`` with its training columns, checked for bad data.

    The result holds the text columns in order (``anchor``/``positive``/``negative...`` with an objective) and
    ``label`` when ``spec.label_column`` is set. A missing column, an empty or non-text value, a malformed line, bytes
    that are not UTF-8, a CSV/TSV line with the wrong number of fields or a shard whose ``counts.json`` / offsets do
    not match raises a :class:`DataError` naming the file and line. With ``on_bad_rows: skip`` the bad rows are left
    out instead and counted in ``bad_rows``. A URL (``s3://``, ``gs://``, ``hf://``, ``https://``) is read through
    its stream into the Arrow cache (to train on a URL without copying it, use :func:`build_training_data`, which
    streams it).

    Args:
        spec: A :class:`DatasetSpec` or a mapping of its fields.
        cache_dir: The ``datasets`` cache folder (default: the Hugging Face cache).
        bad_rows: Where ``on_bad_rows: skip`` counts the rows it leaves out (default: a counter whose summary is
            logged).

    Example:
        ::

            from st_contrast.data import load_dataset_spec

            triplets = load_dataset_spec({"name": "nli", "path": "nli/triplets.tsv.gz", "objective": "triplet"})
    """
    if not isinstance(spec, DatasetSpec):
        spec = DatasetSpec.from_dict(spec)
    report = bad_rows if bad_rows is not None else BadRows(spec.name)
    dataset = _load(spec, cache_dir, report if spec.on_bad_rows == "skip" else None)
    if bad_rows is None and report.total:
        logger.warning("%s", report.summary())
    return dataset


def _load(spec: DatasetSpec, cache_dir: str | None, bad_rows: BadRows | None) -> datasets.Dataset:
    register_image_storage(spec)
    paths = [spec.path] if isinstance(spec.path, (str, os.PathLike)) else list(spec.path)
    paths = [str(path) for path in paths]
    first = os.path.expanduser(paths[0])

    shards = len(paths) == 1 and (
        (first.endswith(".jsonl.gz") and (Path(first).parent / "counts.json").is_file())  # a contrastors pattern
        or (os.path.isdir(first) and (Path(first) / "counts.json").is_file())
    )
    if is_url(first) and spec.image_shards:
        from st_contrast.data.image_shards import expand_shard_urls, load_image_shards

        files = expand_shard_urls(paths)
        dataset, counts = load_image_shards(files, spec.name, spec.max_rows)
        shown = files[0] if len(files) == 1 else f"{files[0]} and {len(files) - 1} more shard(s)"
        return _prepare(dataset, spec, _Source(shown, counts), bad_rows, cache_dir)
    if is_url(first) or (shards and bad_rows is not None):  # read line by line: the stream reader does that
        from st_contrast.data.stream_cache import load_stream_into_cache

        return load_stream_into_cache(spec, cache_dir=cache_dir, bad_rows=bad_rows)
    if shards:
        from st_contrast.data.contrastors import load_contrastors_shards

        return load_contrastors_shards(first, spec=spec, cache_dir=cache_dir)
    if len(paths) == 1 and os.path.isdir(first):
        directory = Path(first)
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
        elif (
            bad_rows is not None
            and not spec.image_columns
            and all(text_format(f) for f in files)
            and not _json_documents(files)
        ):
            from st_contrast.data.stream_cache import load_text_files_skipping

            return load_text_files_skipping(files, spec, cache_dir, bad_rows)
        else:
            dataset, source = _load_files(files, spec, cache_dir)
    elif len(paths) == 1 and (first.startswith((".", "/", "~")) or _suffix(first)):
        raise DataError(f"Dataset {spec.name!r}: {paths[0]!r} does not exist.")
    else:
        dataset, source = _load_hub(paths[0], spec, cache_dir), _Source(f"hub dataset {paths[0]!r}")
    try:
        return _prepare(dataset, spec, source, bad_rows, cache_dir)
    except (pa.ArrowInvalid, UnicodeDecodeError) as error:  # e.g. bytes that are not UTF-8 inside JSON strings
        problems = [problem for file, _ in source.files if (problem := _scan(file))]
        raise DataError(f"Dataset {spec.name!r}: {problems[0] if problems else error}") from error


def _json_documents(files: list[str]) -> bool:
    """Whether a ``.json`` file holds one JSON document (an array) rather than JSON Lines."""
    for file in files:
        if file.lower().removesuffix(".gz").endswith(".json"):
            opener = gzip.open if file.lower().endswith(".gz") else open
            with opener(file, "rb") as handle:
                if handle.read(4096).lstrip()[:1] == b"[":
                    return True
    return False


def _scan(file: str) -> str | None:
    """The first bad line of a text file (JSON documents: only their encoding), or None."""
    kind = text_format(file)
    if kind is None:
        return None
    return scan_text_records(file, "text" if _json_documents([file]) else kind)


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
            with quiet_datasets():
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


def _describe_file_error(file: str, builder: str, error: Exception) -> str:
    """The error of a file that ``datasets`` could not read, located to a line where the file itself is at fault."""
    if builder != "parquet" and (problem := _scan(file)):
        return problem
    cause = error.__cause__ or error.__context__ or error
    if "EmptyDataError" in type(cause).__name__ or Path(file).stat().st_size == 0:
        return f"{file}: the file is empty (no header, no rows)."
    if "corresponds to no data" in str(cause):
        return f"{file}: the file has a header but no rows."
    return f"{file}: cannot be read as {builder} ({type(cause).__name__}: {cause})."


def _prepare(
    dataset: datasets.Dataset,
    spec: DatasetSpec,
    source: _Source,
    bad_rows: BadRows | None = None,
    cache_dir: str | None = None,
) -> datasets.Dataset:
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
        dataset = _map_with_rows(dataset, plan, source, bad_rows)
    else:
        dataset = dataset.select_columns([*plan.sources, *([plan.label_source] if plan.label_source else [])])
        renames = {s: t for s, t in zip(plan.sources, plan.targets, strict=True) if s != t}
        if plan.label_source and plan.label_source != "label":
            renames[plan.label_source] = "label"
        if renames:
            dataset = dataset.rename_columns(renames)
        dataset = dataset.select_columns(plan.output_columns)
        texts = [column for column in plan.text_columns if column not in images]
        bad = _blank_rows(dataset, texts, source, every=bad_rows is not None)
        if bad and bad_rows is None:
            raise bad[0][1]
        if images and bad_rows is not None:
            bad += bad_image_rows(dataset, images, source.base_dir, source.where, spec.name, cache_dir)
        kept = np.arange(len(dataset))
        if bad:
            first_errors = dict(reversed(bad))  # one error a row (its first), in row order
            for row in sorted(first_errors):
                bad_rows.add(first_errors[row])
            keep = np.ones(len(dataset), dtype=bool)
            keep[list(first_errors)] = False
            kept = np.flatnonzero(keep)
            dataset = dataset.select(kept)
        pending = [column for column in images if dataset.features[column] != IMAGE_REFERENCE]
        if pending:  # the messages name each row by its place in the data file, skipped rows counted
            base_dir, where = (lambda row: source.base_dir(int(kept[row]))), (lambda row: source.where(int(kept[row])))
            dataset = reference_image_columns(dataset, pending, base_dir, where, spec.name)
    if len(dataset) == 0:
        raise DataError(f"Dataset {spec.name!r} ({source.description}) has no good rows: every row was skipped.")
    return dataset


def _image_targets(spec: DatasetSpec, plan: ColumnPlan, source: _Source, features: datasets.Features) -> list[str]:
    """The training names of the image columns: ``spec.image_columns`` (source names) and columns that already hold
    image references (a tar shard's ``image``)."""
    named = [*spec.image_columns, *(name for name in plan.sources if features.get(name) == IMAGE_REFERENCE)]
    return plan.with_images(named, f"Dataset {spec.name!r} ({source.description})").image_targets


def _map_with_rows(
    dataset: datasets.Dataset, plan: ColumnPlan, source: _Source, bad_rows: BadRows | None
) -> datasets.Dataset:
    def convert(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        return plan.map_batch(batch, indices[0], source.where, skip=None if bad_rows is None else bad_rows.add)

    return dataset.map(
        convert,
        batched=True,
        with_indices=True,
        remove_columns=dataset.column_names,
        desc=f"Expanding the negatives of {plan.dataset}",
        load_from_cache_file=bad_rows is None,  # skipping counts the bad rows: the function must run
    )


def _blank_rows(
    dataset: datasets.Dataset, columns: list[str], source: _Source, every: bool
) -> list[tuple[int, BadRowError]]:
    """Rows whose text is missing or blank (the first one, or ``every`` one), checked column-wise in Arrow
    (memory-mapped, chunk by chunk); a column that holds no text at all is an error of the dataset, not a row."""
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
    found: list[tuple[int, BadRowError]] = []
    for table in arrow.iter(batch_size=100_000):
        blank_any = None
        for column in columns:
            values = table.column(column)
            blank = pc.or_kleene(
                pc.is_null(values), pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(values)), pa.scalar(0))
            )
            blank = pc.fill_null(blank, True)
            blank_any = blank if blank_any is None else pc.or_(blank_any, blank)
        for index in np.flatnonzero(blank_any.to_numpy(zero_copy_only=False)):
            row = table.slice(int(index), 1).to_pylist()[0]
            column = next(c for c in columns if row[c] is None or not row[c].strip())
            missing = row[column] is None
            what = "is missing (null)" if missing else "is empty"
            error = BadRowError(
                f"{source.where(offset + int(index))}: column {column!r} {what}. Remove or fix the row.",
                "missing text (null)" if missing else "empty text",
            )
            found.append((offset + int(index), error))
            if not every:
                return found
        offset += table.num_rows
    return found
