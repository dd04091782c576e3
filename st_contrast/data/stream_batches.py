"""One streamed dataset on one rank: shuffled in bounded windows, cut into batches without duplicate texts, and a
position that a checkpoint records and a resumed run restores exactly.

A rank reads its part of each pass (:class:`~st_contrast.data.stream_reader.RankLayout`) in windows of
``shuffle_buffer`` rows; window ``k`` of pass ``p`` is consumed in a permutation seeded by ``(seed, dataset, p,
rank, k)``. A batch takes rows in that order, skipping (``on_bad_rows: skip``, counted) bad rows, and defers a row
whose text (or image) is already in the batch to a later one (``pending``). Rows never get lost at a pass boundary:
the batch that straddles it takes the next pass's first rows. The position is ``(pass, window, rows consumed, pending
rows)``: a resumed stream seeks to the window's first row (``shard``, ``row``), reads the window again and continues
with the next unseen row, the batches identical to those of an uninterrupted run. Pending rows keep their images as
references the checkpoint's JSON can hold (:func:`~st_contrast.data.images.portable_reference`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from st_contrast.data.bad_rows import BadRows
from st_contrast.data.columns import BadRowError, DataError
from st_contrast.data.images import image_identity, is_image_reference, portable_reference, restored_reference
from st_contrast.data.stream_reader import PrefetchReader, RankLayout
from st_contrast.data.stream_sources import StreamSource

__all__ = ["DatasetStream"]

_RESERVED = ("label", "dataset_name")


class DatasetStream:
    """The batches of one streamed dataset on one rank (see the module docstring).

    Args:
        source: The dataset's files.
        dataset_index: Its position in the mixture (seeds, global sample indices).
        rank / world_size: This rank and the number of ranks.
        seed: The run's seed.
        batch_size: Rows per batch on this rank.
        no_duplicates: Keep every text unique within a batch.
        sample_offset: The global index of the dataset's first row, when rows get a ``label`` sample index (None: no
            index).
        dataset_name: Added to every row as ``dataset_name`` (a mixture's per-dataset prompts and losses), or None.
    """

    def __init__(
        self,
        source: StreamSource,
        dataset_index: int,
        rank: int,
        world_size: int,
        seed: int,
        batch_size: int,
        no_duplicates: bool = True,
        sample_offset: int | None = None,
        dataset_name: str | None = None,
    ) -> None:
        self.source = source
        self.spec = source.spec
        self.index, self.rank, self.world_size, self.seed = dataset_index, rank, world_size, seed
        self.batch_size = batch_size
        self.no_duplicates = no_duplicates
        self.sample_offset = sample_offset
        self.dataset_name = dataset_name
        self.window_rows = self.spec.shuffle_buffer
        self.layout = RankLayout(_cut_counts(source), seed, dataset_index, rank, world_size, self.window_rows > 1)
        self.file_starts = np.concatenate([[0], np.cumsum([file.rows for file in source.files])]).tolist()
        self.bad_rows = BadRows(source.name)
        self.pass_index, self.window_index, self.consumed = 0, 0, 0
        self.pending: list[dict[str, Any]] = []
        self._window: list | None = None
        self._order: np.ndarray | None = None
        self._reader: PrefetchReader | None = None

    @property
    def windows_per_pass(self) -> int:
        return -(-self.layout.rows_per_pass // self.window_rows)

    def _window_size(self, window_index: int) -> int:
        return min(self.window_rows, self.layout.rows_per_pass - window_index * self.window_rows)

    def _load_window(self) -> None:
        if self._reader is None:
            position = self.window_index * self.window_rows
            self._reader = PrefetchReader(
                self.source, self.layout, self.pass_index, position, capacity=self.window_rows
            )
        rows = self._reader.take(self._window_size(self.window_index))
        if self.spec.on_bad_rows == "raise":
            bad = next((item for _, _, item in rows if isinstance(item, BadRowError)), None)
            if bad is not None:
                self.close()
                raise bad
        self._window = rows
        if self.window_rows > 1:
            rng = np.random.default_rng([self.seed, self.index, self.pass_index, self.rank, self.window_index])
            self._order = rng.permutation(len(rows))
        else:
            self._order = np.arange(len(rows))

    def _next_item(self) -> tuple[int, int, Any]:
        if self._window is None:
            self._load_window()
        while self.consumed == len(self._window):
            self.window_index += 1
            if self.window_index == self.windows_per_pass:
                self.pass_index, self.window_index = self.pass_index + 1, 0
            self.consumed = 0
            self._load_window()
        item = self._window[self._order[self.consumed]]
        self.consumed += 1
        return item

    def _row(self, file: int, row: int, values: dict[str, Any]) -> dict[str, Any]:
        out = dict(values)
        if self.sample_offset is not None:
            out["label"] = self.sample_offset + self.file_starts[file] + row
        if self.dataset_name is not None:
            out["dataset_name"] = self.dataset_name
        return out

    def _texts(self, row: dict[str, Any]) -> list[Any]:
        """The values a batch holds once: texts, and images by :func:`~st_contrast.data.images.image_identity`."""
        return [
            image_identity(value) if is_image_reference(value) else value
            for key, value in row.items()
            if key not in _RESERVED
        ]

    def next_batch(self) -> list[dict[str, Any]]:
        """The next ``batch_size`` rows (a bad row raises in ``raise`` mode when its window is read)."""
        batch: list[dict[str, Any]] = []
        seen: set[Any] = set()

        def fits(row: dict[str, Any]) -> bool:
            texts = self._texts(row)
            if self.no_duplicates and any(text in seen for text in texts):
                return False
            seen.update(texts)
            return True

        waiting = []
        for row in self.pending:
            if len(batch) < self.batch_size and fits(row):
                batch.append(row)
            else:
                waiting.append(row)
        self.pending = waiting
        while len(batch) < self.batch_size:
            file, row, values = self._next_item()
            if isinstance(values, BadRowError):
                self.bad_rows.add(values)
                continue
            training_row = self._row(file, row, values)
            if fits(training_row):
                batch.append(training_row)
            else:
                self.pending.append(training_row)
                if len(self.pending) > max(self.window_rows, 16 * self.batch_size):
                    self.close()
                    raise DataError(
                        f"Dataset {self.source.name!r}: {len(self.pending)} rows wait for a batch without their "
                        "repeated texts; the data has too few distinct texts for batches without duplicates. Set "
                        "data.batch_sampler: batch_sampler to allow them, or deduplicate the data."
                    )
        return batch

    def state_dict(self) -> dict[str, Any]:
        """The position: the current window (and where it starts), the rows of it consumed, the pending rows."""
        located = self.layout.locate(self.pass_index, self.window_index * self.window_rows)
        start = {"shard": self.source.files[located[0]].url, "row": located[1]} if located else None
        return {
            "pass": self.pass_index,
            "window": self.window_index,
            "consumed": self.consumed,
            "window_start": start,
            "pending": [_portable(row) for row in self.pending],
            "bad_rows": self.bad_rows.as_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (of the same dataset, rank and world size): the reader seeks to the window's
        first row and the window is read again."""
        self.close()
        self.pass_index, self.window_index = int(state["pass"]), int(state["window"])
        self.consumed = int(state["consumed"])
        self.pending = [_restored(row) for row in state.get("pending", [])]
        self.bad_rows = BadRows.from_dict(self.source.name, state.get("bad_rows", {}))
        if self.window_index >= self.windows_per_pass or self.consumed > self._window_size(self.window_index):
            raise DataError(
                f"Dataset {self.source.name!r}: the checkpoint's stream position (pass {self.pass_index}, window "
                f"{self.window_index}, row {self.consumed}) does not fit this dataset: were its files, max_rows or "
                "shuffle_buffer changed?"
            )

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        self._reader, self._window, self._order = None, None, None


def _portable(row: dict[str, Any]) -> dict[str, Any]:
    """A pending row as the checkpoint's JSON holds it: image references without the bytes they can be read again
    from (:func:`~st_contrast.data.images.portable_reference`)."""
    return {key: portable_reference(value) if is_image_reference(value) else value for key, value in row.items()}


def _restored(row: dict[str, Any]) -> dict[str, Any]:
    return {key: restored_reference(value) if is_image_reference(value) else value for key, value in row.items()}


def _cut_counts(source: StreamSource) -> list[int]:
    """Rows per file, cut at ``max_rows`` (the first rows of the dataset in file order)."""
    counts, left = [], source.total_rows
    for file in source.files:
        take = min(file.rows, left)
        counts.append(take)
        left -= take
    return counts
