"""Corpora for the streaming tests: contrastors shard folders and Parquet files whose every row is known."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import datasets

from st_contrast.data import index_contrastors_shards


def pair(shard: int, row: int, duplicate_every: int | None = None) -> dict:
    """Row ``row`` of shard ``shard``; with ``duplicate_every`` the query repeats across that many rows."""
    query = f"query {shard}-{row // duplicate_every}" if duplicate_every else f"query {shard}-{row} é"
    return {"query": query, "document": f"document {shard}-{row}", "negatives": [f"negative {shard}-{row}"]}


def write_shards(root: Path, sizes: list[int], duplicate_every: int | None = None) -> list[dict]:
    """contrastors shards ``shard-00000.jsonl.gz``... with counts.json and offsets.json.gz; returns the rows in
    global order (the order of the sample indices)."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for shard, size in enumerate(sizes):
        records = [pair(shard, i, duplicate_every) for i in range(size)]
        with gzip.open(root / f"shard-{shard:05d}.jsonl.gz", "wt", encoding="utf8") as handle:
            handle.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
        rows.extend(records)
    index_contrastors_shards(root)
    return rows


def write_parquet(root: Path, size: int, name: str = "part-0.parquet") -> list[dict]:
    root.mkdir(parents=True, exist_ok=True)
    records = [{"question": f"question {i}", "answer": f"answer {i}"} for i in range(size)]
    datasets.Dataset.from_list(records).to_parquet(str(root / name), batch_size=7)  # several row groups
    return records
