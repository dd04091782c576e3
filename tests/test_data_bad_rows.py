"""``on_bad_rows``: hand-built files with known bad rows in every format. ``raise`` names the file and line; ``skip``
loads exactly the good rows (compared with the list written beside the bad ones) and counts the bad ones exactly."""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path

import datasets
import pytest
import yaml
from stream_helpers import write_shards

from st_contrast.cli import main
from st_contrast.data import BadRows, DataError, build_training_data, load_dataset_spec


def _jsonl(root: Path) -> tuple[str, list, dict, str]:
    lines = [
        b'{"query": "q0", "document": "d0"}',
        b'{"query": "q1"}',  # missing column
        b'{"query": "q2", "document": "   "}',  # empty text
        b'{"query": "q3", "document": ',  # malformed JSON
        b'{"query": "caf\xe9", "document": "d4"}',  # not UTF-8
        b'["q5", "d5"]',  # not an object
        b'{"query": "q6", "document": null}',  # null text
        b'{"query": "q7", "document": "d7", "extra": 1}',
    ]
    (root / "rows.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    good = [{"anchor": "q0", "positive": "d0"}, {"anchor": "q7", "positive": "d7"}]
    counts = {
        "missing column": 1,
        "empty text": 1,
        "malformed JSON": 1,
        "not UTF-8": 1,
        "not a JSON object": 1,
        "missing text (null)": 1,
    }
    return str(root / "rows.jsonl"), good, counts, r"rows\.jsonl, line 4: malformed JSON"


def _csv(root: Path) -> tuple[str, list, dict, str]:
    text = (
        b"query,document\n"
        b"q0,d0\n"
        b"q1,d1,extra\n"  # too many fields
        b"q2\n"  # too few
        b'q3,""\n'  # empty text
        b"q\xff4,d4\n"  # not UTF-8
        b'q5,"a document\nover two lines"\n'  # a quoted field spanning lines: a good row
        b'"q6, with a comma",d6\n'
    )
    (root / "rows.csv").write_bytes(text)
    good = [
        {"anchor": "q0", "positive": "d0"},
        {"anchor": "q5", "positive": "a document\nover two lines"},
        {"anchor": "q6, with a comma", "positive": "d6"},
    ]
    counts = {"wrong number of fields": 2, "empty text": 1, "not UTF-8": 1}
    return str(root / "rows.csv"), good, counts, r"rows\.csv, line 3: 3 fields, but the header has 2"


def _tsv_gz(root: Path) -> tuple[str, list, dict, str]:
    text = (
        b"query\tdocument\n"
        b"q0\td0\n"
        b"q1\td1\tmore\n"  # too many fields
        b"NA\tnull\n"  # text that looks like a missing value stays text
        b"q3\t\n"  # empty text
        b"\xe9\td4\n"  # not UTF-8
        b'q5 "quoted\td5\n'  # a stray quote is text in TSV
    )
    (root / "rows.tsv.gz").write_bytes(gzip.compress(text))
    good = [
        {"anchor": "q0", "positive": "d0"},
        {"anchor": "NA", "positive": "null"},
        {"anchor": 'q5 "quoted', "positive": "d5"},
    ]
    counts = {"wrong number of fields": 1, "empty text": 1, "not UTF-8": 1}
    return str(root / "rows.tsv.gz"), good, counts, r"rows\.tsv\.gz, line 3: 3 fields, but the header has 2"


def _parquet(root: Path) -> tuple[str, list, dict, str]:
    datasets.Dataset.from_dict(
        {"query": ["q0", None, "q2", "q3", " "], "document": ["d0", "d1", "", "d3", "d4"]}
    ).to_parquet(str(root / "rows.parquet"))
    good = [{"anchor": "q0", "positive": "d0"}, {"anchor": "q3", "positive": "d3"}]
    counts = {"missing text (null)": 1, "empty text": 2}
    return str(root / "rows.parquet"), good, counts, r"rows\.parquet, row 1 \(data line 2\): column 'anchor' is missing"


def _truncated_jsonl_gz(root: Path) -> tuple[str, list, dict, str]:
    records = [{"query": f"q{i}", "document": f"d{i}"} for i in range(3000)]
    compressed = gzip.compress("".join(json.dumps(r) + "\n" for r in records).encode())
    (root / "cut.jsonl.gz").write_bytes(compressed[: len(compressed) // 2])
    with gzip.open(root / "cut.jsonl.gz", "rb") as handle:  # the complete lines before the damage
        kept = 0
        try:
            for line in handle:
                kept += line.endswith(b"\n")
        except EOFError:
            pass
    good = [{"anchor": r["query"], "positive": r["document"]} for r in records[:kept]]
    return (
        str(root / "cut.jsonl.gz"),
        good,
        {"truncated file (rows unknown)": 1},
        r"cut\.jsonl\.gz.*gzip stream is trunc",
    )


FILES = {
    "jsonl": _jsonl,
    "csv": _csv,
    "tsv.gz": _tsv_gz,
    "parquet": _parquet,
    "truncated jsonl.gz": _truncated_jsonl_gz,
}


@pytest.mark.parametrize("kind", sorted(FILES))
def test_skip_loads_exactly_the_good_rows_and_counts_the_bad_ones(kind, tmp_path):
    path, good, counts, _ = FILES[kind](tmp_path)
    spec = {"name": "d", "path": path, "columns": {"query": "anchor", "document": "positive"}, "on_bad_rows": "skip"}
    for attempt in ("read", "cached"):  # the counts come back with a cached load too
        bad = BadRows("d")
        loaded = load_dataset_spec(spec, cache_dir=str(tmp_path / "cache"), bad_rows=bad)
        assert loaded.to_list() == good, attempt
        assert bad.as_dict()["by_reason"] == counts, attempt
        assert all(path.rsplit("/", 1)[-1] in example for example in bad.examples)


@pytest.mark.parametrize("kind", sorted(FILES))
def test_raise_names_the_file_and_line(kind, tmp_path):
    path, _, _, message = FILES[kind](tmp_path)
    spec = {"name": "d", "path": path, "columns": {"query": "anchor", "document": "positive"}}
    with pytest.raises(DataError, match=message):
        load_dataset_spec(spec, cache_dir=str(tmp_path / "cache"))


def test_contrastors_shards_skip_bad_lines_and_the_rest_of_a_truncated_shard(tmp_path):
    rows = write_shards(tmp_path / "corpus", [6, 6, 8])
    shard = tmp_path / "corpus" / "shard-00001.jsonl.gz"
    lines = gzip.decompress(shard.read_bytes()).split(b"\n")
    lines[2] = lines[2][:-3]  # malformed
    shard.write_bytes(gzip.compress(b"\n".join(lines)))  # counts and offsets are still those of the good shard
    shard = tmp_path / "corpus" / "shard-00002.jsonl.gz"
    compressed = shard.read_bytes()
    cut = next(
        n for n in range(10, len(compressed)) if zlib.decompressobj(31).decompress(compressed[:n]).count(b"\n") == 2
    )
    shard.write_bytes(compressed[:cut])  # 2 complete rows, the other 6 are lost
    expected = [r for i, r in enumerate(rows) if i != 8 and i < 14]
    bad = BadRows("c")
    loaded = load_dataset_spec(
        {"name": "c", "path": str(tmp_path / "corpus"), "objective": "paired", "on_bad_rows": "skip"},
        cache_dir=str(tmp_path / "cache"),
        bad_rows=bad,
    )
    assert loaded.to_list() == [{"anchor": r["query"], "positive": r["document"]} for r in expected]
    assert bad.as_dict()["by_reason"] == {"malformed JSON": 1, "truncated file": 6}


def test_negatives_lists_skip_rows_with_too_few(tmp_path):
    datasets.Dataset.from_dict(
        {"q": ["a", "b", "c"], "p": ["pa", "pb", "pc"], "n": [["x1", "x2"], ["y1"], ["z1", " "]]}
    ).to_parquet(str(tmp_path / "neg.parquet"))
    bad = BadRows("n")
    spec = {"name": "n", "path": str(tmp_path / "neg.parquet"), "objective": "triplet", "columns": ["q", "p", "n"],
            "num_negatives": 2, "on_bad_rows": "skip"}  # fmt: skip
    loaded = load_dataset_spec(spec, cache_dir=str(tmp_path / "cache"), bad_rows=bad)
    assert loaded.to_list() == [{"anchor": "a", "positive": "pa", "negative_1": "x1", "negative_2": "x2"}]
    assert bad.as_dict()["by_reason"] == {"too few negatives": 1, "empty text": 1}


def test_training_data_reports_the_counts_per_dataset(tmp_path):
    path, good, counts, _ = _jsonl(tmp_path)
    (tmp_path / "ok.jsonl").write_text('{"anchor": "a", "positive": "b"}\n', encoding="utf8")
    data = build_training_data(
        [
            {"name": "j", "path": path, "columns": {"query": "anchor", "document": "positive"}, "on_bad_rows": "skip"},
            {"name": "ok", "path": str(tmp_path / "ok.jsonl")},
        ],
        cache_dir=str(tmp_path / "cache"),
    )
    assert len(data.dataset["j"]) == len(good) and data.bad_rows["j"].as_dict()["by_reason"] == counts
    assert "ok" not in data.bad_rows  # on_bad_rows: raise


def test_cli_reports_skipped_rows_in_metrics_and_the_log(tmp_path, tiny_model_factory, capsys):
    path, good, counts, _ = _jsonl(tmp_path)
    config = {
        "output_dir": str(tmp_path / "run"),
        "model": {"name_or_path": tiny_model_factory("bert"), "max_seq_length": 16},
        "loss": {"name": "InfoNCELoss"},
        "data": {
            "datasets": [
                {
                    "name": "j",
                    "path": path,
                    "columns": {"query": "anchor", "document": "positive"},
                    "on_bad_rows": "skip",
                }
            ]
        },
        "training": {"max_steps": 1, "per_device_train_batch_size": 2, "use_cpu": True, "save_strategy": "no"},
        "monitoring": {"enabled": False},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config), encoding="utf8")
    assert main(["train", str(tmp_path / "c.yaml")]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["data"]["bad_rows"]["j"]["by_reason"] == counts
    assert metrics["data"]["bad_rows"]["j"]["total"] == sum(counts.values())
    err = capsys.readouterr().err
    assert f"dataset 'j': skipped {sum(counts.values())} bad rows" in err
