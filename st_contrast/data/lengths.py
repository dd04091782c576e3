"""Per-row token lengths and text hashes of a dataset, computed column-wise in Arrow chunks."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["estimate_token_lengths", "resolve_prompts", "row_lengths", "text_columns", "text_hashes"]

_CHUNK = 10_000

try:  # stable across processes (unlike hash()), so every rank makes the same no-duplicate decisions
    import xxhash

    def _hash(text: str) -> int:
        return xxhash.xxh64_intdigest(text.encode("utf8")) & 0x7FFFFFFFFFFFFFFF

except ImportError:  # pragma: no cover - xxhash ships with datasets

    def _hash(text: str) -> int:
        return int.from_bytes(hashlib.blake2b(text.encode("utf8"), digest_size=8).digest(), "little") >> 1


def text_columns(dataset: datasets.Dataset, exclude: Sequence[str] = ()) -> list[str]:
    """The string columns of ``dataset`` that are fed to the model (not labels, not ``dataset_name``)."""
    skip = {"dataset_name", *exclude}
    columns = [
        name
        for name, feature in dataset.features.items()
        if name not in skip and isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")
    ]
    if not columns:
        raise ValueError(f"The dataset has no text columns to measure (columns: {dataset.column_names}).")
    return columns


def _chunks(dataset: datasets.Dataset, columns: list[str]) -> Iterator[pa.Table]:
    yield from dataset.with_format("arrow", columns=columns).iter(batch_size=_CHUNK)


def resolve_prompts(dataset: datasets.Dataset, prompts: Any) -> dict[str, str]:
    """The ``{column: prompt}`` that ST's collator applies to ``dataset`` (nested prompts via ``dataset_name``)."""
    if not prompts:
        return {}
    if isinstance(prompts, str):
        return {column: prompts for column in dataset.column_names}
    if isinstance(next(iter(prompts.values())), Mapping):
        name = dataset[0].get("dataset_name") if len(dataset) else None
        return dict(prompts.get(name, {})) if name is not None else {}
    return dict(prompts)


def estimate_token_lengths(values: pa.ChunkedArray | pa.Array, prompt: str = "") -> np.ndarray:
    """A cheap token-count estimate: UTF-8 bytes / 4, plus 2 special tokens (no tokenizer needed)."""
    nbytes = pc.fill_null(pc.binary_length(pc.cast(values, pa.large_binary())), 0).to_numpy(zero_copy_only=False)
    return (nbytes + len(prompt.encode("utf8")) + 3) // 4 + 2


def row_lengths(
    dataset: datasets.Dataset,
    columns: list[str],
    tokenizer: Any = None,
    max_length: int | None = None,
    prompts: Mapping[str, str] | None = None,
) -> np.ndarray:
    """Each row's length: the longest of its text columns in tokens (``tokenizer``) or estimated tokens.

    With a tokenizer, the prompt of a column is prepended as ST's collator does, special tokens are counted and
    lengths are capped at ``max_length`` (the model truncates there).
    """
    prompts = prompts or {}
    parts = []
    for table in _chunks(dataset, columns):
        longest = np.zeros(table.num_rows, dtype=np.int64)
        for column in columns:
            prompt = prompts.get(column, "")
            if tokenizer is None:
                lengths = estimate_token_lengths(table.column(column), prompt)
            else:
                texts = [prompt + (text or "") for text in table.column(column).to_pylist()]
                encoded = tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
                lengths = np.fromiter((len(ids) for ids in encoded), dtype=np.int64, count=len(texts))
            np.maximum(longest, lengths, out=longest)
        parts.append(longest)
    lengths = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    if max_length is not None:
        np.minimum(lengths, max_length, out=lengths)
    return lengths


def text_hashes(dataset: datasets.Dataset, columns: list[str]) -> np.ndarray:
    """``[rows, columns]`` 63-bit hashes of the texts, stable across processes, for the no-duplicates check."""
    parts = []
    for table in _chunks(dataset, columns):
        block = np.empty((table.num_rows, len(columns)), dtype=np.int64)
        for j, column in enumerate(columns):
            block[:, j] = [_hash(text or "") for text in table.column(column).to_pylist()]
        parts.append(block)
    return np.concatenate(parts) if parts else np.zeros((0, len(columns)), dtype=np.int64)
