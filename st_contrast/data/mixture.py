"""Training data from one or several :class:`DatasetSpec`: the dataset (or mixture), its prompts, sample indices."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import datasets

from st_contrast.data.bad_rows import BadRows
from st_contrast.data.columns import DataError
from st_contrast.data.images import IMAGE_REFERENCE
from st_contrast.data.loading import load_dataset_spec
from st_contrast.data.spec import DatasetSpec

__all__ = ["SAMPLE_INDEX_COLUMN", "TrainingData", "add_sample_index", "build_training_data"]

#: The column the stateful losses (GloFND, GlobalContrastiveLoss) read sample indices from: ST's label column.
SAMPLE_INDEX_COLUMN = "label"
_LABEL_COLUMNS = ("label", "labels", "score", "scores")


@dataclass
class TrainingData:
    """What :func:`build_training_data` returns.

    Attributes:
        dataset: A ``Dataset`` for one spec, a ``DatasetDict`` (keyed by spec name, in spec order) for a mixture, or
            a :class:`~st_contrast.data.StreamingDataset` when the datasets stream (URLs, ``stream: true``).
        prompts: The ``prompts`` argument of ``SentenceTransformerTrainingArguments``: ``{column: prompt}`` for one
            dataset, ``{dataset: {column: prompt}}`` for a mixture, ``None`` without prefixes.
        num_samples: Total rows (over all datasets): ``num_samples`` of GloFND / GlobalContrastiveLoss.
        weights: Per-dataset sampling weights in dataset order for ``SingleDatasetBatchSampler(weights=...)``, or
            ``None`` when no spec sets one (proportional to size).
        specs: The specs, in order.
        bad_rows: The rows ``on_bad_rows: skip`` left out while loading, per dataset (a streamed dataset counts its
            own while it trains: ``StreamingDataset.bad_rows()``).
    """

    dataset: Any
    prompts: dict[str, str] | dict[str, dict[str, str]] | None
    num_samples: int
    weights: list[float] | None
    specs: list[DatasetSpec]
    bad_rows: dict[str, BadRows] = field(default_factory=dict)

    @property
    def streaming(self) -> bool:
        """Whether the datasets stream during training (``dataset`` is a ``StreamingDataset``)."""
        return not isinstance(self.dataset, (datasets.Dataset, datasets.DatasetDict))

    @property
    def names(self) -> list[str]:
        return [spec.name for spec in self.specs]


def add_sample_index(
    dataset: datasets.Dataset | datasets.DatasetDict, column: str = SAMPLE_INDEX_COLUMN
) -> tuple[datasets.Dataset | datasets.DatasetDict, int]:
    """Add each row's global index as ``column`` (the label column the stateful losses read); returns ``(data, n)``.

    In a ``DatasetDict`` the indices continue from one dataset to the next (in the dict's order), so they are unique
    over the whole mixture and ``n`` (the total number of rows) is the ``num_samples`` of GloFND or
    GlobalContrastiveLoss. A dataset that already has a label column is refused: a loss can read only one label.
    """
    parts = dict(dataset) if isinstance(dataset, datasets.DatasetDict) else {None: dataset}
    offset = 0
    indexed = {}
    for name, part in parts.items():
        clash = [label for label in (column, *_LABEL_COLUMNS) if label in part.column_names]
        if clash:
            raise DataError(
                f"Dataset {name or ''!r} already has the label column(s) {clash}; the sample index needs the label "
                "column. Drop them (or leave 'label_column' unset) when training with GloFND / GlobalContrastiveLoss."
            )
        indexed[name] = part.add_column(column, list(range(offset, offset + len(part))))
        offset += len(part)
    if isinstance(dataset, datasets.DatasetDict):
        return datasets.DatasetDict(indexed), offset
    return indexed[None], offset


_index_rows = add_sample_index


def build_training_data(
    specs: DatasetSpec | Mapping[str, Any] | Sequence[DatasetSpec | Mapping[str, Any]],
    add_sample_index: bool = False,
    cache_dir: str | None = None,
) -> TrainingData:
    """Load every spec and assemble the training data, prompts and sample count.

    Args:
        specs: One spec or a list (a mixture); each a :class:`DatasetSpec` or a mapping of its fields.
        add_sample_index: Add the global row index as the ``label`` column (see :func:`add_sample_index`).
        cache_dir: The ``datasets`` cache folder.

    Example:
        ::

            from sentence_transformers import SentenceTransformerTrainingArguments
            from st_contrast.data import SingleDatasetBatchSampler, build_training_data

            data = build_training_data([
                {"name": "nli", "path": "nli/triplets.tsv.gz", "objective": "triplet",
                 "query_prefix": "classification"},
                {"name": "qa", "path": "qa/*.jsonl.gz", "columns": {"question": "anchor", "answer": "positive"},
                 "query_prefix": "search_query", "document_prefix": "search_document"},
            ])
            args = SentenceTransformerTrainingArguments(
                "out", prompts=data.prompts, multi_dataset_batch_sampler=SingleDatasetBatchSampler
            )
    """
    if isinstance(specs, (DatasetSpec, Mapping)):
        specs = [specs]
    specs = [spec if isinstance(spec, DatasetSpec) else DatasetSpec.from_dict(spec) for spec in specs]
    if not specs:
        raise ValueError("No datasets given: pass at least one DatasetSpec.")
    names = [spec.name for spec in specs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"Dataset names must be unique in a mixture; repeated: {duplicates}.")

    weights = None
    if any(spec.weight is not None for spec in specs):
        unset = [spec.name for spec in specs if spec.weight is None]
        if unset:
            raise ValueError(f"Set 'weight' on every dataset of the mixture or on none; {unset} have none.")
        weights = [float(spec.weight) for spec in specs]

    if any(spec.streams for spec in specs):
        return _streaming_data(specs, weights, add_sample_index)
    bad_rows = {spec.name: BadRows(spec.name) for spec in specs if spec.on_bad_rows == "skip"}
    loaded = {
        spec.name: load_dataset_spec(spec, cache_dir=cache_dir, bad_rows=bad_rows.get(spec.name)) for spec in specs
    }
    prompts_by_name = {}
    for spec in specs:
        columns = [column for column in loaded[spec.name].column_names if column != "label"]
        images = {column for column in columns if loaded[spec.name].features[column] == IMAGE_REFERENCE}
        if prompts := {column: p for column, p in spec.prompts(columns).items() if column not in images}:
            prompts_by_name[spec.name] = prompts

    if len(specs) == 1:
        dataset: datasets.Dataset | datasets.DatasetDict = loaded[specs[0].name]
        prompts: Any = prompts_by_name.get(specs[0].name) or None
    else:
        dataset = datasets.DatasetDict(loaded)
        prompts = prompts_by_name or None
    num_samples = sum(len(part) for part in loaded.values())
    if add_sample_index:
        dataset, num_samples = _index_rows(dataset)
    return TrainingData(
        dataset=dataset, prompts=prompts, num_samples=num_samples, weights=weights, specs=specs, bad_rows=bad_rows
    )


def _streaming_data(specs: list[DatasetSpec], weights: list[float] | None, add_sample_index: bool) -> TrainingData:
    """Datasets that stream: their files, counts and first rows are read now (errors name the URL), rows later."""
    from st_contrast.data.stream_sources import open_stream_source
    from st_contrast.data.streaming import StreamingDataset

    if local := [spec.name for spec in specs if not spec.streams]:
        raise DataError(
            f"Dataset(s) {local} would load into the Arrow cache while the others stream: a mixture streams all its "
            "datasets or none. Set 'stream: true' on them (JSON Lines, CSV, TSV, Parquet, contrastors shards) or "
            "'stream: false' on the streamed ones."
        )
    sources = [open_stream_source(spec) for spec in specs]
    prompts_by_name = {}
    for source in sources:
        source.count_rows()
        if add_sample_index and source.plan.label_source:
            raise DataError(
                f"Dataset {source.name!r} keeps the label column {source.plan.label_source!r}; the sample index needs "
                "the label column. Leave 'label_column' unset when training with GloFND / GlobalContrastiveLoss."
            )
        images = source.plan.image_targets
        if prompts := {c: p for c, p in source.spec.prompts(source.plan.text_columns).items() if c not in images}:
            prompts_by_name[source.name] = prompts
    dataset = StreamingDataset(sources, weights=weights, add_sample_index=add_sample_index)
    prompts: Any = prompts_by_name or None
    if len(specs) == 1:
        prompts = prompts_by_name.get(specs[0].name) or None
    return TrainingData(dataset=dataset, prompts=prompts, num_samples=dataset.num_samples, weights=weights, specs=specs)
