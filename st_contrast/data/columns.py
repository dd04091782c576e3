"""Map a source dataset's columns to the training columns: selection, renaming, objectives, negatives, checks."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from st_contrast.data.spec import OBJECTIVES, DatasetSpec

__all__ = ["BadRowError", "ColumnPlan", "DataError", "plan_columns", "text_problem"]

# Default source names per objective: contrastors' names, then Sentence Transformers' names.
_DEFAULT_SOURCES = {
    "paired": (("query", "document"), ("anchor", "positive")),
    "triplet": (("query", "document", "negatives"), ("anchor", "positive", "negative")),
    "self": (("query",), ("anchor",)),
}


class DataError(ValueError):
    """Bad training data: the message names the dataset, the file and the row, and the fix."""


class BadRowError(DataError):
    """One bad row (or line) that ``on_bad_rows: skip`` may leave out: ``reason`` is its kind (``malformed JSON``,
    ``not UTF-8``, ``missing column``...), the message names the file or URL and the line; ``rows`` is how many rows
    it stands for (more than one for the rest of a truncated file)."""

    def __init__(self, message: str, reason: str, rows: int = 1) -> None:
        super().__init__(message)
        self.reason = reason
        self.rows = rows


def _reason(problem: str) -> str:
    """The bad-row reason of a :func:`text_problem`."""
    return "missing text (null)" if "null" in problem else "empty text" if "empty" in problem else "not text"


def text_problem(value: Any) -> str | None:
    """Why ``value`` cannot be a training text (``None`` if it can)."""
    if value is None:
        return "is missing (null)"
    if not isinstance(value, str):
        return f"is a {type(value).__name__}, not text"
    if not value.strip():
        return "is empty"
    return None


@dataclass
class ColumnPlan:
    """Which source columns become which training columns.

    ``sources[i]`` becomes ``targets[i]``, except a list-valued ``negatives_source`` that becomes
    ``negative_1..n`` (``negative`` when ``num_negatives == 1``). ``label_source`` becomes ``"label"``. The
    ``image_sources`` hold image references (see :mod:`st_contrast.data.images`), not texts.
    """

    dataset: str
    sources: list[str]
    targets: list[str]
    negatives_source: str | None = None
    num_negatives: int | None = None
    label_source: str | None = None
    image_sources: list[str] = field(default_factory=list)

    def with_images(self, names: list[str], where: str) -> ColumnPlan:
        """This plan with the source columns ``names`` read as images; a name that is no training column, or the
        negatives list, is a :class:`DataError`."""
        unknown = [name for name in names if name not in self.sources]
        if unknown:
            raise DataError(f"{where}: image_columns {unknown} are not among its training columns {self.sources}.")
        if self.negatives_source in names:
            raise DataError(f"{where}: image columns cannot be a list of negatives; list them one by one.")
        self.image_sources = list(dict.fromkeys(names))
        return self

    @property
    def image_targets(self) -> list[str]:
        """The training names of the image columns."""
        return [
            target for source, target in zip(self.sources, self.targets, strict=True) if source in self.image_sources
        ]

    @property
    def text_columns(self) -> list[str]:
        """The final text columns, in order."""
        columns = []
        for source, target in zip(self.sources, self.targets, strict=True):
            if source == self.negatives_source:
                columns.extend(self.negative_names())
            else:
                columns.append(target)
        return columns

    @property
    def output_columns(self) -> list[str]:
        return self.text_columns + (["label"] if self.label_source else [])

    def negative_names(self) -> list[str]:
        count = self.num_negatives or 1
        return ["negative"] if count == 1 else [f"negative_{i}" for i in range(1, count + 1)]

    def map_row(self, row: Mapping[str, Any], where: Callable[[], str]) -> dict[str, Any]:
        """One source row as a training row; a :class:`DataError` naming ``where()`` if it is bad."""
        output: dict[str, Any] = {}
        for source, target in zip(self.sources, self.targets, strict=True):
            if source not in row:
                raise BadRowError(
                    f"{where()}: column {source!r} is missing (the row has {sorted(row)}). Fix the data or set "
                    f"'columns' of dataset {self.dataset!r}.",
                    "missing column",
                )
            value = row[source]
            if source == self.negatives_source:
                for name, negative in zip(self.negative_names(), self.expand_negatives(value, where), strict=True):
                    output[name] = negative
                continue
            if source in self.image_sources:  # a reference made by the reader (its file, byte range or bytes)
                output[target] = value
                continue
            problem = text_problem(value)
            if problem:
                raise BadRowError(f"{where()}: column {source!r} {problem}. Remove or fix the row.", _reason(problem))
            output[target] = value
        if self.label_source:
            if self.label_source not in row:
                raise BadRowError(f"{where()}: label column {self.label_source!r} is missing.", "missing column")
            output["label"] = row[self.label_source]
        return output

    def expand_negatives(self, value: Any, where: Callable[[], str]) -> list[str]:
        if not isinstance(value, list):
            value = [value]
        count = self.num_negatives or 1
        if len(value) < count:
            raise BadRowError(
                f"{where()}: column {self.negatives_source!r} has {len(value)} negatives, fewer than the "
                f"{count} used (num_negatives). Lower num_negatives of dataset {self.dataset!r} or drop the row.",
                "too few negatives",
            )
        negatives = value[:count]
        for negative in negatives:
            problem = text_problem(negative)
            if problem:
                raise BadRowError(
                    f"{where()}: a negative in column {self.negatives_source!r} {problem}.", _reason(problem)
                )
        return negatives

    def map_batch(
        self,
        batch: dict[str, list[Any]],
        first_row: int,
        where: Callable[[int], str],
        skip: Callable[[BadRowError], None] | None = None,
    ) -> dict[str, list]:
        """``map_row`` over a batch of columns (for ``Dataset.map(batched=True)``); with ``skip``, bad rows are handed
        to it and left out instead of raising."""
        size = len(next(iter(batch.values())))
        rows = []
        for i in range(size):
            try:
                rows.append(
                    self.map_row({key: values[i] for key, values in batch.items()}, lambda i=i: where(first_row + i))
                )
            except BadRowError as error:
                if skip is None:
                    raise
                skip(error)
        return _columnar(iter(rows), self.output_columns)


def _columnar(rows: Iterator[dict[str, Any]], columns: list[str]) -> dict[str, list]:
    output: dict[str, list] = {column: [] for column in columns}
    for row in rows:
        for column in columns:
            output[column].append(row[column])
    return output


def plan_columns(
    spec: DatasetSpec,
    available: list[str],
    first_row: Mapping[str, Any] | None,
    where: str,
) -> ColumnPlan:
    """The :class:`ColumnPlan` of ``spec`` for a source with columns ``available`` (``first_row`` sizes negatives)."""
    if isinstance(spec.columns, Mapping):
        sources, targets = list(spec.columns), list(spec.columns.values())
    elif spec.columns is not None:
        sources = list(spec.columns)
        targets = list(sources)
    elif spec.objective is not None:
        candidates = _DEFAULT_SOURCES[spec.objective]
        sources = next((list(names) for names in candidates if set(names) <= set(available)), None)
        if sources is None:
            raise DataError(
                f"{where}: objective {spec.objective!r} needs columns {list(candidates[0])} or {list(candidates[1])}, "
                f"but the data has {available}. Set 'columns' of dataset {spec.name!r} to the ones to use, in order."
            )
        targets = list(sources)
    else:
        sources = [column for column in available if column != spec.label_column]
        targets = list(sources)
    if spec.label_column and spec.label_column in sources:
        index = sources.index(spec.label_column)
        del sources[index], targets[index]

    missing = [column for column in [*sources, spec.label_column] if column and column not in available]
    if missing:
        raise DataError(
            f"{where}: column(s) {missing} not found; the data has {available}. Fix 'columns' (or 'label_column') "
            f"of dataset {spec.name!r}."
        )
    if not sources:
        raise DataError(f"{where}: no text columns selected for dataset {spec.name!r}; the data has {available}.")

    plan = ColumnPlan(dataset=spec.name, sources=sources, targets=targets, label_source=spec.label_column)
    if spec.objective is not None:
        names = OBJECTIVES[spec.objective]
        if spec.objective == "triplet" and len(sources) > 3:
            names = ("anchor", "positive", *(f"negative_{i}" for i in range(1, len(sources) - 1)))
        if len(sources) != len(names):
            raise DataError(
                f"{where}: objective {spec.objective!r} takes {len(names)} columns ({list(names)}), got {sources}. "
                f"Fix 'columns' of dataset {spec.name!r}."
            )
        plan.targets = list(names)
        if spec.objective == "triplet" and len(sources) == 3:
            value = None if first_row is None else first_row.get(sources[2])
            if isinstance(value, list) or spec.num_negatives is not None:
                plan.negatives_source = sources[2]
                plan.num_negatives = spec.num_negatives or (len(value) if isinstance(value, list) else 1)
                if plan.num_negatives == 0:
                    raise DataError(f"{where}: the first row's negatives list {sources[2]!r} is empty.")
    if len(set(plan.output_columns)) != len(plan.output_columns):
        raise DataError(f"{where}: the training columns {plan.output_columns} of {spec.name!r} repeat a name.")
    if {"dataset_name", "return_loss"} & set(plan.output_columns):
        raise DataError(f"{where}: 'dataset_name' and 'return_loss' are reserved by Sentence Transformers: rename.")
    return plan
