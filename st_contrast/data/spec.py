"""One training dataset as configured by a user: where it is, which columns, which objective and prefixes."""

from __future__ import annotations

import dataclasses
import numbers
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BAD_ROW_MODES", "OBJECTIVES", "DatasetSpec", "normalize_prefix"]

BAD_ROW_MODES = ("raise", "skip")
"""The values of a dataset entry's ``on_bad_rows``."""

#: contrastors objective types and the Sentence Transformers column names they map to, in order.
OBJECTIVES: dict[str, tuple[str, ...]] = {
    "paired": ("anchor", "positive"),
    "triplet": ("anchor", "positive", "negative"),
    "self": ("anchor",),
}


_FIELD_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "name": ((str,), "a string"),
    "path": ((str, os.PathLike, list, tuple), "a path or URL, or a list of them"),
    "split": ((str,), "a string"),
    "subset": ((str, type(None)), "a string or null"),
    "columns": ((list, tuple, Mapping, type(None)), "a list of column names, a {source: target} mapping or null"),
    "objective": ((str, Mapping, type(None)), "a string, a {type: ..., columns: [...]} mapping or null"),
    "num_negatives": ((numbers.Integral, type(None)), "an integer or null"),
    "query_prefix": ((str, type(None)), "a string or null"),
    "document_prefix": ((str, type(None)), "a string or null"),
    "max_rows": ((numbers.Integral, type(None)), "an integer or null"),
    "weight": ((numbers.Real, type(None)), "a number or null"),
    "label_column": ((str, type(None)), "a string or null"),
    "image_columns": ((str, list, tuple), "a column name or a list of them"),
    "load_kwargs": ((Mapping,), "a mapping"),
    "on_bad_rows": ((str,), "a string"),
    "stream": ((bool, str), "true, false or auto"),
    "storage_options": ((Mapping,), "a mapping"),
    "shuffle_buffer": ((numbers.Integral,), "a positive integer"),
}
"""A dataset entry's fields: the types a value may have, and how an error names them. A boolean is no number."""


def _check_types(spec: DatasetSpec) -> None:
    """Refuse a field of a wrong type (``max_rows: true``, ``query_prefix: 5``, ``columns: anchor``) as it is set,
    naming the field and the type it needs, rather than failing later in the loader (or reading ``true`` as 1)."""
    for name, (types, expected) in _FIELD_TYPES.items():
        value = getattr(spec, name)
        wrong = not isinstance(value, types) or (isinstance(value, bool) and bool not in types)
        if not wrong and name in ("path", "columns", "image_columns") and not isinstance(value, (str, type(None))):
            items = [*value.keys(), *value.values()] if isinstance(value, Mapping) else list(value)
            wrong = not all(isinstance(item, str if name != "path" else (str, os.PathLike)) for item in items)
        if wrong:
            raise ValueError(
                f"Dataset {spec.name!r}: {name} must be {expected}, got {value!r} ({type(value).__name__})."
            )


def _is_url(path: str) -> bool:
    """``scheme://...`` (a single-letter scheme is a Windows drive, not a URL)."""
    scheme, separator, _ = path.partition("://")
    return bool(separator) and len(scheme) > 1 and scheme.replace("+", "").replace("-", "").isalnum()


def normalize_prefix(prefix: str | None) -> str | None:
    """A contrastors-style prefix as the prompt string Sentence Transformers prepends.

    contrastors writes ``f"{prefix}: {text}"``, so ``"search_query"`` becomes ``"search_query: "``. A prefix that
    already ends in whitespace is used as written (``"query: "``, ``"Represent this: "``), one that ends in ``":"`` gets
    a space, and ``""`` means no prefix.
    """
    if prefix is None or prefix == "":
        return prefix
    if prefix[-1].isspace():
        return prefix
    if prefix.endswith(":"):
        return prefix + " "
    return prefix + ": "


@dataclass
class DatasetSpec:
    """One training dataset.

    Args:
        name: The dataset's name: the key in a mixture's ``DatasetDict``, in the per-dataset prompts and in logs.
        path: A Hugging Face hub id, a local directory (``save_to_disk`` output, a contrastors shard directory with
            ``counts.json``, or a folder of data files), or a data file / glob of ``.parquet``, ``.jsonl``, ``.json``,
            ``.csv`` or ``.tsv`` files (``.gz`` allowed for the text formats), or webdataset ``.tar`` shards. A list
            of files or globs works too, and URLs (``s3://``, ``gs://``, ``hf://``, ``https://``...; see ``stream``).
        split: The split of a hub dataset, a ``DatasetDict`` saved to disk, or a data folder.
        subset: The configuration name of a hub dataset (``load_dataset(path, subset)``).
        columns: Which columns to train on, in order (a list), or a ``{source: target}`` mapping that renames them,
            in the mapping's order. Default: with an ``objective``, the contrastors or Sentence Transformers names
            (``query``/``document``/``negatives`` or ``anchor``/``positive``/``negative``), else every column.
        objective: ``"paired"`` (anchor, positive), ``"triplet"`` (anchor, positive, negative or negative_1..n: a
            list-valued negatives column is expanded), ``"self"`` (anchor only) or ``None`` (columns kept as named).
            A contrastors mapping ``{"type": "triplet", "columns": [...]}`` is accepted too.
        num_negatives: With a list-valued negatives column, how many negatives to keep (the first ones); default:
            as many as the first row has. Rows with fewer are an error.
        query_prefix: Prefix of the first (query) column, contrastors style (see :func:`normalize_prefix`).
        document_prefix: Prefix of the other columns; defaults to ``query_prefix`` as in contrastors (set ``""`` to
            give documents no prefix).
        max_rows: Keep only the first ``max_rows`` rows.
        weight: Relative sampling weight in a mixture (see ``SingleDatasetBatchSampler``); ``None``: proportional
            to the dataset's size.
        label_column: A column to keep as the label (e.g. a score for CoSENT); it is renamed ``"label"``.
        image_columns: Source columns that hold images: file paths (relative to the data file's folder, or
            absolute), encoded bytes, PIL images or ``datasets.Image`` cells. They are stored as references and
            decoded per batch (:class:`~st_contrast.data.ImageTextDataCollator`); a missing file is reported when the
            data loads (a streamed row when it is read), a corrupt one when its batch is built, naming the data file
            and row. Paths in a table at a URL are relative to its folder's URL. Webdataset tar shards (``*.tar``)
            always have an ``image`` column.
        load_kwargs: Extra keyword arguments for ``datasets.load_dataset``.
        on_bad_rows: ``"raise"`` (default): a bad row (missing column, empty text, malformed JSON, bytes that are not
            UTF-8, a CSV/TSV line with the wrong number of fields) stops with an error naming the file and line.
            ``"skip"``: bad rows are left out and counted by reason (reported in ``metrics.json`` and the run log);
            a truncated gzip stream skips the rest of its file. With image columns, rows whose image is missing,
            corrupt or no image are skipped too (every image is decoded once to find them: while loading, or in a
            stream's reader as its rows are read, their bytes kept for the batch).
        stream: ``"auto"`` (default): URLs (``s3://``, ``gs://``, ``hf://``, ``http(s)://``, ``file://``) are
            streamed during training, local paths are loaded into the Arrow cache. ``True`` streams a local path
            too (JSON Lines, CSV, TSV, Parquet, contrastors shards, tar shards); ``False`` copies a URL into the cache
            first. Image-text tar shards (``*.tar``) stream as webdataset does, each shard read front to back with
            its images (:mod:`~st_contrast.data.stream_tar`); with ``False`` (the default for local shards) each is
            indexed once (its headers read, no copy kept) and the images are read by byte range per batch.
        storage_options: fsspec options for the URL's filesystem (e.g. ``{"endpoint_url": ...}``, ``{"anon":
            true}``); by default credentials and endpoints come from the environment (``AWS_ENDPOINT_URL``,
            ``AWS_PROFILE``, ``GOOGLE_APPLICATION_CREDENTIALS``, ``HF_TOKEN``...). With image columns or tar shards
            they also serve the images in the same bucket read per batch (images elsewhere use the environment).
        shuffle_buffer: Rows a stream shuffles together (its memory bound): each rank reads its part of the shards
            in windows of this many rows and trains on each window in a seeded random order (``1``: file order). A
            rank holds about two windows (one read ahead); streamed tar shards hold their encoded images in them too
            (10,000 rows of 50 kB images: about 1 GB), so lower it for large images.
    """

    name: str
    path: str | Sequence[str]
    split: str = "train"
    subset: str | None = None
    columns: Sequence[str] | Mapping[str, str] | None = None
    objective: str | Mapping[str, Any] | None = None
    num_negatives: int | None = None
    query_prefix: str | None = None
    document_prefix: str | None = None
    max_rows: int | None = None
    weight: float | None = None
    label_column: str | None = None
    image_columns: Sequence[str] = ()
    load_kwargs: dict[str, Any] = field(default_factory=dict)
    on_bad_rows: str = "raise"
    stream: bool | str = "auto"
    storage_options: dict[str, Any] = field(default_factory=dict)
    shuffle_buffer: int = 10_000

    def __post_init__(self) -> None:
        if isinstance(self.objective, Mapping):
            objective = dict(self.objective)
            if "columns" in objective and self.columns is None:
                self.columns = objective["columns"]
            self.objective = objective.get("type")
        _check_types(self)
        if self.objective is not None and self.objective not in OBJECTIVES:
            raise ValueError(
                f"Dataset {self.name!r}: unknown objective {self.objective!r}; use one of {sorted(OBJECTIVES)} or None."
            )
        if self.max_rows is not None and self.max_rows <= 0:
            raise ValueError(f"Dataset {self.name!r}: max_rows must be positive, got {self.max_rows}.")
        if self.num_negatives is not None and self.num_negatives <= 0:
            raise ValueError(f"Dataset {self.name!r}: num_negatives must be positive, got {self.num_negatives}.")
        if isinstance(self.image_columns, str):
            self.image_columns = [self.image_columns]
        self.image_columns = list(self.image_columns or ())
        if self.weight is not None and not self.weight > 0:
            raise ValueError(f"Dataset {self.name!r}: weight must be positive, got {self.weight}.")
        if self.on_bad_rows not in BAD_ROW_MODES:
            raise ValueError(
                f"Dataset {self.name!r}: on_bad_rows must be one of {list(BAD_ROW_MODES)}, got {self.on_bad_rows!r}."
            )
        if self.stream not in (True, False, "auto"):
            raise ValueError(f"Dataset {self.name!r}: stream must be true, false or auto, got {self.stream!r}.")
        if self.shuffle_buffer < 1:
            raise ValueError(
                f"Dataset {self.name!r}: shuffle_buffer must be a positive integer, got {self.shuffle_buffer!r}."
            )
        if not isinstance(self.storage_options, Mapping):
            raise ValueError(f"Dataset {self.name!r}: storage_options must be a mapping, got {self.storage_options!r}.")

    @property
    def _paths(self) -> list[str]:
        return [str(self.path)] if isinstance(self.path, (str, os.PathLike)) else [str(path) for path in self.path]

    @property
    def image_shards(self) -> bool:
        """Whether the dataset is webdataset-style image-text tar shards (``*.tar``, local or URLs)."""
        return all(path.lower().endswith(".tar") for path in self._paths)

    @property
    def streams(self) -> bool:
        """Whether training reads this dataset as a stream (see ``stream``)."""
        if self.stream != "auto":
            return bool(self.stream)
        return any(_is_url(path) for path in self._paths)

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> DatasetSpec:
        """A spec from a config mapping; contrastors keys are accepted (``bucket`` for ``path``)."""
        config = dict(config)
        if "bucket" in config and "path" not in config:
            config["path"] = config.pop("bucket")
        config.pop("query_only", None)  # contrastors: documents get the query prefix, which is our default anyway
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(
                f"Dataset {config.get('name', '?')!r}: unknown key(s) {unknown}; the keys are {sorted(known)}."
            )
        if "name" not in config or "path" not in config:
            raise ValueError(f"A dataset entry needs 'name' and 'path', got keys {sorted(config)}.")
        return cls(**config)

    def prompts(self, columns: Sequence[str]) -> dict[str, str]:
        """The ``{column: prompt}`` mapping for the final text columns (empty without prefixes)."""
        query = normalize_prefix(self.query_prefix)
        document = normalize_prefix(self.document_prefix) if self.document_prefix is not None else query
        prompts = {}
        for position, column in enumerate(columns):
            prompt = query if position == 0 else document
            if prompt:
                prompts[column] = prompt
        return prompts
