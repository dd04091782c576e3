"""Length-grouped batches under a token budget, equal in size within each group of ``world_size`` batches."""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Mapping
from typing import Any

import datasets
import numpy as np
import torch
from sentence_transformers.base.sampler import DefaultBatchSampler
from transformers.utils import logging

from st_contrast.compat import dataset_fingerprint
from st_contrast.data.lengths import resolve_prompts, row_lengths, text_columns, text_hashes
from st_contrast.data.single_dataset import resolve_world_size

__all__ = ["TokenBudgetBatchSampler"]

logger = logging.get_logger(__name__)


class TokenBudgetBatchSampler(DefaultBatchSampler):
    """Batches of similar-length rows, at most ``max_tokens`` padded tokens per text column, optionally dedup'd.

    The rows are sorted by length (the longest of a row's text columns, in tokens when a ``tokenizer`` is given, else
    estimated from UTF-8 bytes) and cut into ``num_buckets`` buckets of equal row count. In a bucket whose longest
    row has ``L`` tokens every batch has ``min(batch_size, max_tokens // L)`` rows, so each column of each batch pads
    to at most ``max_tokens`` tokens and to little more than its real length. Every epoch the rows of each bucket are
    reshuffled into new batches and the batches are shuffled across buckets: compositions change, the number and
    sizes of batches do not (``len`` is exact, so the trainer's step count and resume arithmetic hold).

    For ``gather_across_devices`` (ST's MNRL/CachedMNRL with in-batch negatives from every rank), all ranks of a
    step must hold batches of the same size: batches therefore come in groups of ``world_size`` consecutive
    batches of one bucket and one size, which accelerate hands to ranks ``0..W-1`` for the same step. It reports
    ``batch_size = None`` so that accelerate yields these variable-size batches unchanged.

    ST calls it with ``(dataset, batch_size, drop_last, valid_label_columns, generator, seed)``; pass the options
    with ``functools.partial``::

        args = SentenceTransformerTrainingArguments(
            "out", batch_sampler=partial(TokenBudgetBatchSampler, max_tokens=4096, tokenizer=model.tokenizer)
        )

    With a ``DatasetDict``, combine it with :class:`SingleDatasetBatchSampler` (ST's own multi-dataset samplers
    cannot take ``batch_size = None``).

    Args:
        dataset: The dataset (ST passes the training dataset).
        batch_size: The most rows per batch (per device).
        drop_last: Drop each bucket's last, smaller group of batches.
        valid_label_columns: Label columns (not measured, not deduplicated).
        generator: Unused (the order comes from ``seed`` and the epoch); accepted for ST's signature.
        seed: Seed of the shuffles.
        max_tokens: Padded-token budget per text column of one batch (rows x longest row), or ``None`` for
            ``batch_size`` rows (length grouping only).
        tokenizer: A Hugging Face tokenizer, or a ``SentenceTransformer`` (its tokenizer and ``max_seq_length``),
            to measure rows in tokens; ``None``: the byte estimate.
        max_length: Cap on a row's length (the model truncates there); default: the model's ``max_seq_length``.
        prompts: The trainer's ``prompts`` (counted in the lengths), flat or per dataset.
        num_buckets: Length buckets; default: one per 8 groups of full batches, between 1 and 32.
        no_duplicates: No text appears twice in a group of ``world_size`` batches (across all text columns), as
            ST's ``NoDuplicatesBatchSampler``. A group that the bucket cannot fill without repeats reuses rows
            from another shuffle of its bucket, and only if that fails too keeps a repeat (logged once).
        world_size: Ranks that share a step; default: from torch.distributed or accelerate, else 1.
        lengths: Precomputed row lengths (skips measuring).
    """

    def __init__(
        self,
        dataset: datasets.Dataset,
        batch_size: int,
        drop_last: bool = False,
        valid_label_columns: list[str] | None = None,
        generator: torch.Generator | None = None,
        seed: int = 0,
        max_tokens: int | None = None,
        tokenizer: Any = None,
        max_length: int | None = None,
        prompts: str | Mapping[str, Any] | None = None,
        num_buckets: int | None = None,
        no_duplicates: bool = False,
        world_size: int | None = None,
        lengths: np.ndarray | None = None,
    ) -> None:
        super().__init__(
            dataset,
            batch_size=batch_size,
            drop_last=drop_last,
            valid_label_columns=valid_label_columns,
            generator=generator,
            seed=seed,
        )
        self.seed = 0 if seed is None else seed
        self.max_batch_size = batch_size
        self.batch_size = None  # variable sizes: accelerate must not drop batches shorter than `batch_size`
        self.max_tokens = max_tokens
        self.no_duplicates = no_duplicates
        self.world_size = resolve_world_size(world_size)
        if max_tokens is not None and max_tokens < 1:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}.")
        if hasattr(tokenizer, "tokenizer") and hasattr(tokenizer, "max_seq_length"):
            max_length = max_length or tokenizer.max_seq_length
            tokenizer = tokenizer.tokenizer

        columns = text_columns(dataset, exclude=valid_label_columns or ())
        if lengths is None:
            lengths = row_lengths(dataset, columns, tokenizer, max_length, resolve_prompts(dataset, prompts))
        self.lengths = np.asarray(lengths, dtype=np.int64)
        if len(self.lengths) != len(dataset):
            raise ValueError(f"lengths has {len(self.lengths)} entries for {len(dataset)} rows.")
        self._hashes = text_hashes(dataset, columns) if no_duplicates else None
        fingerprint = dataset_fingerprint(dataset) or str(len(dataset))
        self._salt = zlib.crc32(fingerprint.encode())  # datasets of one mixture do not share shuffles

        rows = len(self.lengths)
        group_rows = self.world_size * batch_size
        if num_buckets is None:
            num_buckets = int(np.clip(rows // (8 * group_rows), 1, 32))
        order = np.lexsort((np.arange(rows), self.lengths))
        self.buckets = [bucket for bucket in np.array_split(order, max(1, min(num_buckets, rows))) if len(bucket)]
        self.bucket_batch_sizes = []
        self.bucket_group_sizes: list[list[int]] = []  # rows per batch of each group, per bucket
        for bucket in self.buckets:
            longest = int(self.lengths[bucket].max())
            size = batch_size if max_tokens is None else max(1, min(batch_size, max_tokens // max(longest, 1)))
            if max_tokens is not None and longest > max_tokens:
                logger.warning_once(
                    f"Rows of {longest} tokens exceed max_tokens={max_tokens}; they get batches of one row. Raise "
                    "max_tokens or lower max_length."
                )
            full, rest = divmod(len(bucket), self.world_size * size)
            sizes = [size] * full
            if not drop_last and rest // self.world_size > 0:
                sizes.append(rest // self.world_size)
            self.bucket_batch_sizes.append(size)
            self.bucket_group_sizes.append(sizes)

    def __len__(self) -> int:
        return self.world_size * sum(len(sizes) for sizes in self.bucket_group_sizes)

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch, self._salt])
        groups: list[np.ndarray] = []
        for bucket, sizes in zip(self.buckets, self.bucket_group_sizes, strict=True):
            rows = rng.permutation(bucket)
            if self._hashes is None:
                starts = np.cumsum([0] + [self.world_size * size for size in sizes])
                groups.extend(rows[start:end] for start, end in zip(starts[:-1], starts[1:], strict=True))
            else:
                groups.extend(self._distinct_groups(rows, sizes, bucket, rng))
        for index in rng.permutation(len(groups)):
            group = groups[index]
            size = len(group) // self.world_size
            for rank in range(self.world_size):
                yield group[rank * size : (rank + 1) * size].tolist()

    def _distinct_groups(
        self, rows: np.ndarray, sizes: list[int], bucket: np.ndarray, rng: np.random.Generator
    ) -> list[np.ndarray]:
        """Groups of the given sizes in which no text repeats: conflicting rows wait for a later group."""
        hashes = self._hashes
        groups, waiting, position = [], [], 0
        for size in sizes:
            need = size * self.world_size
            chosen: list[int] = []
            seen: set[int] = set()

            def take(row: int, chosen=chosen, seen=seen) -> bool:
                keys = set(hashes[row].tolist())
                if seen.isdisjoint(keys):
                    chosen.append(row)
                    seen.update(keys)
                    return True
                return False

            still_waiting = [row for row in waiting if len(chosen) >= need or not take(row)]
            while len(chosen) < need and position < len(rows):
                row = int(rows[position])
                position += 1
                if not take(row):
                    still_waiting.append(row)
            waiting = still_waiting
            if len(chosen) < need:  # the bucket ran out of compatible rows: reuse rows of another shuffle
                members = set(chosen)
                for row in rng.permutation(bucket).tolist():
                    if len(chosen) >= need:
                        break
                    if row not in members:
                        take(row)
            if len(chosen) < need:
                logger.warning_once(
                    "TokenBudgetBatchSampler: a bucket has too few distinct texts to fill a batch without "
                    "duplicates; some batches repeat a text. Lower batch_size or raise num_buckets' bucket size."
                )
                members = set(chosen)
                spare = [row for row in rng.permutation(bucket).tolist() if row not in members]
                chosen.extend(spare[: need - len(chosen)])
                while len(chosen) < need:
                    chosen.append(int(bucket[len(chosen) % len(bucket)]))
            groups.append(np.asarray(chosen, dtype=np.int64))
        return groups
