"""Training on streamed datasets: a mixture whose every step is one dataset on all ranks, resumable exactly.

:class:`StreamingDataset` is what :func:`~st_contrast.data.build_training_data` returns for datasets that stream
(URLs, or ``stream: true``). It yields whole batches (lists of rows) to a ``DataLoader(batch_size=None)``;
:class:`~st_contrast.ContrastiveTrainer` builds that loader, saves the stream position of every rank in each
checkpoint and restores it on resume. Per epoch, each dataset contributes as many steps as its smallest rank part
holds whole batches (or, with ``weights``, that total split by weight), in an order seeded by ``(seed, epoch)`` that
every rank computes alike: at every step all ranks train on the same dataset, each on its own rows.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import IterableDataset

from st_contrast.data.allocation import allocate_batches
from st_contrast.data.bad_rows import BadRows
from st_contrast.data.columns import DataError
from st_contrast.data.stream_batches import DatasetStream
from st_contrast.data.stream_sources import StreamSource

__all__ = ["STREAM_STATE_VERSION", "StreamingDataset", "gather_bad_rows"]

logger = logging.getLogger(__name__)

STREAM_STATE_VERSION = 1


class StreamingDataset(IterableDataset):
    """Streamed training datasets as one iterable of batches (see the module docstring).

    Args:
        sources: One :class:`~st_contrast.data.stream_sources.StreamSource` per dataset, in mixture order.
        weights: Per-dataset sampling weights, or None (proportional to size).
        add_sample_index: Give every row its global index (datasets in order, rows in file order) as ``label``, for
            GloFND / GlobalContrastiveLoss.

    Example:
        ::

            from st_contrast import ContrastiveTrainer
            from st_contrast.data import build_training_data

            data = build_training_data({"name": "pairs", "path": "s3://corpus/pairs/shard-{00000..00099}.jsonl.gz"})
            trainer = ContrastiveTrainer(model=model, args=args, train_dataset=data.dataset, loss=loss)
            trainer.train()  # data.dataset is a StreamingDataset: no copy on local disk
    """

    def __init__(
        self, sources: Sequence[StreamSource], weights: Sequence[float] | None = None, add_sample_index: bool = False
    ) -> None:
        super().__init__()
        self.sources = list(sources)
        self.names = [source.name for source in self.sources]
        self.weights = None if weights is None else [float(weight) for weight in weights]
        self.add_sample_index = add_sample_index
        self.totals = [source.total_rows for source in self.sources]
        self.num_samples = sum(self.totals)
        columns: list[str] = []
        for source in self.sources:
            columns += [column for column in source.plan.output_columns if column not in columns]
        if add_sample_index and "label" not in columns:
            columns.append("label")
        self.column_names = columns
        self.batch_size: int | None = None
        self.epoch, self.step = 0, 0
        self._streams: list[DatasetStream] = []
        self._snapshot: dict[str, Any] | None = None
        self._order_cache: tuple[int, list[int]] | None = None

    @property
    def dataset_names(self) -> list[str] | None:
        """The ``dataset_name`` its rows carry (several datasets), else None."""
        return list(self.names) if len(self.names) > 1 else None

    # configuration (by ContrastiveTrainer, from the training arguments)
    def configure(
        self, batch_size: int, seed: int = 0, world_size: int = 1, rank: int = 0, no_duplicates: bool = True
    ) -> StreamingDataset:
        """Set the per-rank batch size, seed and ranks (:class:`~st_contrast.ContrastiveTrainer` does this)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}.")
        self.close()
        self.batch_size, self.seed, self.world_size, self.rank = batch_size, seed, world_size, rank
        self.no_duplicates = no_duplicates
        offsets = np.concatenate([[0], np.cumsum(self.totals)]).tolist()
        several = len(self.sources) > 1
        self._streams = [
            DatasetStream(
                source,
                index,
                rank,
                world_size,
                seed,
                batch_size,
                no_duplicates,
                sample_offset=int(offsets[index]) if self.add_sample_index else None,
                dataset_name=source.name if several else None,
            )
            for index, source in enumerate(self.sources)
        ]
        steps = []
        for source, stream in zip(self.sources, self._streams, strict=True):
            rows = stream.layout.min_rows_per_pass
            if rows < batch_size:
                raise DataError(
                    f"Dataset {source.name!r} has {source.total_rows} rows: {rows} per rank on {world_size} rank(s), "
                    f"fewer than one batch of {batch_size}. Lower the batch size or add data."
                )
            steps.append(rows // batch_size)
        self.steps_per_dataset = steps if self.weights is None else allocate_batches(sum(steps), self.weights)
        self.epoch, self.step, self._snapshot = 0, 0, None
        return self

    def _check_configured(self) -> None:
        if self.batch_size is None:
            raise RuntimeError(
                "This StreamingDataset is not configured: train it with st_contrast.ContrastiveTrainer (which sets "
                "the batch size and ranks), or call configure(batch_size, seed, world_size, rank) first."
            )

    def __len__(self) -> int:
        """Batches per epoch on each rank once configured (rows before)."""
        return self.num_samples if self.batch_size is None else sum(self.steps_per_dataset)

    def dataset_order(self, epoch: int) -> list[int]:
        """The dataset of each step of ``epoch`` (the same on every rank)."""
        if self._order_cache is None or self._order_cache[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch, 0x5D])
            order = np.repeat(np.arange(len(self.sources)), self.steps_per_dataset)
            self._order_cache = (epoch, rng.permutation(order).tolist())
        return self._order_cache[1]

    def __iter__(self) -> Iterator[list[dict[str, Any]]]:
        """The batches left in the current epoch; the next call starts the next epoch."""
        self._check_configured()
        if self.step >= len(self):
            self.epoch, self.step = self.epoch + 1, 0
        order = self.dataset_order(self.epoch)
        while self.step < len(order):
            batch = self._streams[order[self.step]].next_batch()
            self.step += 1
            self._snapshot = self._state()
            yield batch

    # position
    def _state(self) -> dict[str, Any]:
        return {
            "version": STREAM_STATE_VERSION,
            "datasets_order": self.names,
            "rank": self.rank,
            "world_size": self.world_size,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "epoch": self.epoch,
            "step": self.step,
            "datasets": {stream.source.name: stream.state_dict() for stream in self._streams},
        }

    def state_dict(self) -> dict[str, Any]:
        """The position after the last batch handed out: per dataset the pass, the window (its first shard and
        row), the rows of it consumed and the pending rows; the mixture's epoch and step."""
        self._check_configured()
        return self._snapshot if self._snapshot is not None else self._state()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict` of the same datasets, batch size and ranks."""
        self._check_configured()
        expected = {"datasets_order": self.names, "world_size": self.world_size, "batch_size": self.batch_size}
        for key, value in expected.items():
            if state.get(key) != value:
                raise DataError(
                    f"The checkpoint's stream position was written with {key} {state.get(key)!r}, this run has "
                    f"{value!r}: a stream resumes exactly only with the same datasets, batch size and number of ranks."
                )
        if state.get("seed") != self.seed:
            raise DataError(f"The checkpoint's stream used seed {state.get('seed')}, this run {self.seed}.")
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        for stream in self._streams:
            stream.load_state_dict(state["datasets"][stream.source.name])
        self._snapshot = self._state()

    def bad_rows(self) -> dict[str, BadRows]:
        """This rank's skipped rows so far, per dataset (see :func:`gather_bad_rows` for all ranks)."""
        return {stream.source.name: stream.bad_rows for stream in self._streams}

    def close(self) -> None:
        """Stop the background readers."""
        for stream in self._streams:
            stream.close()


def gather_bad_rows(dataset: StreamingDataset) -> dict[str, BadRows]:
    """The skipped rows of every rank, summed per dataset (a collective call under torch.distributed)."""
    import torch.distributed as dist

    local = {name: bad.as_dict() for name, bad in dataset.bad_rows().items()}
    gathered = [local]
    if dist.is_available() and dist.is_initialized():
        gathered = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, local)
    total = {name: BadRows(name) for name in dataset.names}
    for part in gathered:
        for name, values in part.items():
            total[name].merge(values)
    return total
