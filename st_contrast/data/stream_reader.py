"""Which rows of a streamed dataset each rank reads, and a background reader that fetches them ahead.

Each pass over a dataset visits its files in a seeded order (the same on every rank, new each pass) and splits the
concatenated rows into ``world_size`` contiguous parts: rank ``r`` reads rows ``r * N // W`` to ``(r + 1) * N // W``
of that order, so the ranks read disjoint rows (whole files, plus at most one file split at each boundary) and
together every row once per pass. :class:`PrefetchReader` reads a rank's part, pass after pass, in a daemon thread
into a bounded queue, so the download and the gzip decompression overlap training and memory stays bounded.
"""

from __future__ import annotations

import atexit
import queue
import threading
import weakref
from collections.abc import Iterator

import numpy as np

from st_contrast.data.stream_files import iter_file_rows
from st_contrast.data.stream_sources import StreamSource

__all__ = ["PrefetchReader", "RankLayout"]

_CHUNK = 256


class RankLayout:
    """The rows of one dataset a rank reads in each pass.

    Args:
        counts: Rows per file, in the dataset's order (already cut at ``max_rows``).
        seed: Seed of the file order.
        dataset_index: The dataset's position in the mixture (mixed into the seed).
        rank: This rank.
        world_size: The number of ranks.
        shuffle: Visit the files in a new seeded order each pass (else in their order).
    """

    def __init__(
        self, counts: list[int], seed: int, dataset_index: int, rank: int, world_size: int, shuffle: bool = True
    ) -> None:
        self.counts = [int(count) for count in counts]
        self.seed, self.dataset_index, self.rank, self.world_size = seed, dataset_index, rank, world_size
        self.shuffle = shuffle
        self.total = sum(self.counts)
        self.start = rank * self.total // world_size
        self.stop = (rank + 1) * self.total // world_size

    @property
    def rows_per_pass(self) -> int:
        """Rows this rank reads per pass."""
        return self.stop - self.start

    @property
    def min_rows_per_pass(self) -> int:
        """Rows the rank with the fewest reads per pass (the same on every rank)."""
        return self.total // self.world_size

    def file_order(self, pass_index: int) -> list[int]:
        if not self.shuffle:
            return list(range(len(self.counts)))
        rng = np.random.default_rng([self.seed, self.dataset_index, pass_index, 0xA5])
        return rng.permutation(len(self.counts)).tolist()

    def segments(self, pass_index: int, position: int = 0) -> list[tuple[int, int, int]]:
        """``(file, first row, stop row)`` pieces of this rank's rows in pass ``pass_index``, from its ``position``-th
        row on."""
        begin, end = self.start + position, self.stop
        pieces, offset = [], 0
        for file in self.file_order(pass_index):
            count = self.counts[file]
            low, high = max(begin, offset), min(end, offset + count)
            if low < high:
                pieces.append((file, low - offset, high - offset))
            offset += count
        return pieces

    def locate(self, pass_index: int, position: int) -> tuple[int, int] | None:
        """``(file, row)`` of this rank's ``position``-th row in pass ``pass_index`` (None past the end)."""
        pieces = self.segments(pass_index, position)
        return (pieces[0][0], pieces[0][1]) if pieces else None


class PrefetchReader:
    """Reads a rank's rows of ``source`` from ``(pass, position)`` on, pass after pass, in a background thread.

    Items are ``(file, row, training row or BadRowError)``, one per row position. At most ``capacity`` rows wait in
    the queue. An error reading the files (a missing object, denied access) is raised by :meth:`take`.

    Args:
        source: The dataset's files.
        layout: Which rows this rank reads.
        pass_index: The pass to start in.
        position: The row of this rank's part of that pass to start at.
        capacity: Rows read ahead at most.
    """

    def __init__(self, source: StreamSource, layout: RankLayout, pass_index: int, position: int, capacity: int) -> None:
        self.source, self.layout = source, layout
        self._chunk = max(1, min(_CHUNK, capacity // 4))
        self._queue: queue.Queue = queue.Queue(maxsize=max(2, capacity // self._chunk))
        self._stop = threading.Event()
        self._items: list = []
        self._next = 0
        self.rows_read = 0  # handed to the batches
        self.rows_fetched = 0  # read from storage (at most ``capacity`` plus two chunks ahead of rows_read)
        self._thread = threading.Thread(
            target=self._run, args=(pass_index, position), name=f"st-contrast-stream-{source.name}", daemon=True
        )
        _LIVE.add(self)
        self._thread.start()

    def _rows(self, pass_index: int, position: int) -> Iterator[tuple[int, int, object] | None]:
        """The rows from the start on, pass after pass; None after each piece of a file (the chunk is handed over)."""
        while not self._stop.is_set():
            for file, first, stop in self.layout.segments(pass_index, position):
                for row, item in iter_file_rows(self.source, file, first, stop):
                    yield file, row, item
                yield None
            pass_index, position = pass_index + 1, 0

    def _run(self, pass_index: int, position: int) -> None:
        chunk: list = []
        try:
            for item in self._rows(pass_index, position):
                if item is not None:
                    chunk.append(item)
                    self.rows_fetched += 1
                if chunk and (item is None or len(chunk) >= self._chunk):
                    if not self._put(chunk):
                        return
                    chunk = []
        except BaseException as error:  # handed to the training thread, which raises it
            if chunk:
                self._put(chunk)
            self._put(error)

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def take(self, count: int) -> list[tuple[int, int, object]]:
        """The next ``count`` rows (waiting for the reader when it is behind)."""
        rows: list = []
        while len(rows) < count:
            if self._next == len(self._items):
                item = self._queue.get()
                if isinstance(item, BaseException):
                    self.close()
                    raise item
                self._items, self._next = item, 0
            take = min(count - len(rows), len(self._items) - self._next)
            rows.extend(self._items[self._next : self._next + take])
            self._next += take
        self.rows_read += count
        return rows

    def close(self, wait: float = 0.0) -> None:
        """Stop the reader thread (it ends within a fraction of a second, or when its current read returns)."""
        self._stop.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if wait:
            self._thread.join(timeout=wait)
        _LIVE.discard(self)


_LIVE: weakref.WeakSet[PrefetchReader] = weakref.WeakSet()


@atexit.register
def _close_readers() -> None:
    """Stop the readers before the interpreter (and fsspec's event loop thread) goes away under them."""
    for reader in list(_LIVE):
        reader.close(wait=2.0)
