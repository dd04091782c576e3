"""contrastors shard folders: read back exactly, streamed one shard at a time, and every inconsistency named."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

import st_contrast.data.contrastors as contrastors
from st_contrast.data import DataError, index_contrastors_shards, load_contrastors_shards, load_dataset_spec


def _row(shard: int, i: int) -> dict:
    return {
        "query": f"query {shard}-{i} é",  # non-ASCII: offsets are bytes, not characters
        "document": f"document {shard}-{i} " + "x" * (i % 7),
        "negatives": [f"neg {shard}-{i}-{k}" for k in range(3)],
        "metadata": {"objective": {"paired": [["query", "document"]], "triplet": [["query", "document", "negatives"]]}},
    }


def write_shards(root: Path, shards: int = 3, rows: int = 5, key_prefix: str = "bucket/corpus/") -> list[list[dict]]:
    """Shards plus counts.json / offsets.json.gz written by hand, bucket-path keys as contrastors stores them."""
    root.mkdir(parents=True, exist_ok=True)
    data, counts, offsets = [], {}, {}
    for shard in range(shards):
        records = [_row(shard, i) for i in range(rows)]
        lines = [(json.dumps(record, ensure_ascii=False) + "\n").encode("utf8") for record in records]
        name = f"shard-{shard:05d}.jsonl.gz"
        with gzip.open(root / name, "wb") as handle:
            handle.write(b"".join(lines))
        starts = [sum(len(line) for line in lines[:i]) for i in range(len(lines))]
        counts[key_prefix + name] = len(lines)
        offsets[key_prefix + name] = {str(i): [start, start + len(lines[i])] for i, start in enumerate(starts)}
        data.append(records)
    (root / "counts.json").write_text(json.dumps({"count_per_file": counts, "total_count": shards * rows}))
    with gzip.open(root / "offsets.json.gz", "wt") as handle:
        json.dump(offsets, handle)
    return data


def test_shards_read_back_in_order_with_objectives(tmp_path):
    data = write_shards(tmp_path / "corpus")
    paired = load_contrastors_shards(tmp_path / "corpus", cache_dir=str(tmp_path / "cache"))
    flat = [record for records in data for record in records]
    assert paired.column_names == ["anchor", "positive"]
    assert list(paired["anchor"]) == [record["query"] for record in flat]
    assert list(paired["positive"]) == [record["document"] for record in flat]

    objective = {"type": "triplet", "columns": ["query", "document", "negatives"]}
    spec = {"name": "c", "path": str(tmp_path / "corpus"), "objective": objective, "num_negatives": 2, "max_rows": 7}
    triplets = load_dataset_spec(spec, cache_dir=str(tmp_path / "cache"))  # a folder with counts.json is a shard dir
    assert triplets.column_names == ["anchor", "positive", "negative_1", "negative_2"]
    assert len(triplets) == 7
    assert triplets[6] == {
        "anchor": flat[6]["query"],
        "positive": flat[6]["document"],
        "negative_1": flat[6]["negatives"][0],
        "negative_2": flat[6]["negatives"][1],
    }


def test_index_contrastors_shards_writes_the_hand_made_layout(tmp_path):
    write_shards(tmp_path / "a", key_prefix="")
    expected_counts = json.loads((tmp_path / "a" / "counts.json").read_text())
    with gzip.open(tmp_path / "a" / "offsets.json.gz", "rt") as handle:
        expected_offsets = json.load(handle)
    (tmp_path / "a" / "counts.json").unlink()
    (tmp_path / "a" / "offsets.json.gz").unlink()
    assert index_contrastors_shards(tmp_path / "a") == expected_counts["count_per_file"]
    assert json.loads((tmp_path / "a" / "counts.json").read_text()) == expected_counts
    with gzip.open(tmp_path / "a" / "offsets.json.gz", "rt") as handle:
        assert json.load(handle) == expected_offsets


def test_shards_are_streamed_one_at_a_time(tmp_path, monkeypatch):
    write_shards(tmp_path / "corpus", shards=4, rows=50)
    events: list[tuple[str, str]] = []
    real_open = contrastors._open_shard

    class Spy:
        def __init__(self, path):
            self.path, self.handle = Path(path).name, real_open(path)

        def __enter__(self):
            events.append(("open", self.path))
            return self

        def __exit__(self, *exc):
            events.append(("close", self.path))
            self.handle.close()

        def __iter__(self):
            for line in self.handle:
                events.append(("row", self.path))
                yield line

        def readline(self):
            return self.handle.readline()

    monkeypatch.setattr(contrastors, "_open_shard", Spy)
    dataset = load_contrastors_shards(tmp_path / "corpus", cache_dir=str(tmp_path / "cache"), writer_batch_size=10)
    assert len(dataset) == 200
    open_now, opened = set(), []
    for event, name in events:
        if event == "open":
            assert not open_now, f"{name} opened while {open_now} was open"
            open_now.add(name)
            opened.append(name)
        elif event == "close":
            open_now.discard(name)
        else:
            assert open_now == {name}, "a row was read from a shard that is not the open one"
    # the peek at shard 0's first row, then each shard exactly once, in order
    assert opened == ["shard-00000.jsonl.gz"] + [f"shard-{i:05d}.jsonl.gz" for i in range(4)]
    assert dataset.cache_files, "the rows were not written to an on-disk (memory-mapped) Arrow file"


def _rewrite_offsets(root: Path, change) -> None:
    with gzip.open(root / "offsets.json.gz", "rt") as handle:
        offsets = json.load(handle)
    change(offsets)
    with gzip.open(root / "offsets.json.gz", "wt") as handle:
        json.dump(offsets, handle)


def _corrupt_shard_line(root: Path) -> None:
    path = root / "shard-00001.jsonl.gz"
    with gzip.open(path, "rb") as handle:
        lines = handle.read().split(b"\n")
    lines[2] = lines[2][:-5]  # row 2 loses its closing characters
    with gzip.open(path, "wb") as handle:
        handle.write(b"\n".join(lines))
    index_contrastors_shards(root)  # offsets consistent with the bad file: only the JSON is wrong


def _truncate_gzip(root: Path) -> None:
    path = root / "shard-00002.jsonl.gz"
    path.write_bytes(path.read_bytes()[:-30])


def _write_counts(root: Path, counts: dict) -> None:
    (root / "counts.json").write_text(json.dumps(counts))


SHARD = "bucket/corpus/shard-{:05d}.jsonl.gz"
DAMAGES = {
    "row count": (
        lambda root: _write_counts(root, {SHARD.format(0): 5, SHARD.format(1): 4, SHARD.format(2): 5}),
        r"shard-00001\.jsonl\.gz has 5 rows, but counts\.json says 4",
    ),
    "uncounted shards": (
        lambda root: _write_counts(root, {"shard-00000.jsonl.gz": 5}),
        r"counts\.json has no count for shard\(s\) \['shard-00001\.jsonl\.gz', 'shard-00002\.jsonl\.gz'\]",
    ),
    "wrong offsets": (
        lambda root: _rewrite_offsets(root, lambda offsets: offsets[SHARD.format(1)].__setitem__("3", [1, 2])),
        r"shard-00001\.jsonl\.gz, row 3 \(line 4\): offsets say bytes 1\.\.2, but the line is at \d+\.\.\d+",
    ),
    "missing offset": (
        lambda root: _rewrite_offsets(root, lambda offsets: offsets[SHARD.format(2)].pop("4")),
        r"shard-00002\.jsonl\.gz, row 4 \(line 5\): the offsets have no \[start, end\] entry",
    ),
    "shard without offsets": (
        lambda root: _rewrite_offsets(root, lambda offsets: offsets.pop(SHARD.format(2))),
        r"has no offsets for shard\(s\) \['shard-00002\.jsonl\.gz'\]",
    ),
    "malformed line": (_corrupt_shard_line, r"shard-00001\.jsonl\.gz, row 2 \(line 3\): malformed JSON"),
    "truncated gzip": (_truncate_gzip, r"shard-00002\.jsonl\.gz, after row \d+: unreadable shard"),
    "malformed offsets": (
        lambda root: (root / "offsets.json.gz").write_bytes(gzip.compress(b'{"shard-00000.jsonl.gz": {"0": [0, ')),
        r"offsets\.json\.gz: malformed JSON",
    ),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_bad_shards_name_file_and_row(tmp_path, damage):
    damage, message = DAMAGES[damage]
    root = tmp_path / "corpus"
    write_shards(root)
    damage(root)
    with pytest.raises(DataError, match=message):
        load_contrastors_shards(root, cache_dir=str(tmp_path / "cache"))


def test_missing_columns_and_invalid_objective_columns(tmp_path):
    root = tmp_path / "corpus"
    write_shards(root)
    with pytest.raises(DataError, match=r"column\(s\) \['doc'\] not found"):
        load_contrastors_shards(root, spec={"objective": "paired", "columns": ["query", "doc"]})
    with pytest.raises(
        DataError, match=r"shard-00000\.jsonl\.gz, row 0 \(line 1\): columns \['document', 'query'\] are not valid"
    ):
        load_contrastors_shards(
            root, spec={"objective": "paired", "columns": ["document", "query"]}, cache_dir=str(tmp_path / "cache")
        )  # fmt: skip


def test_edited_shards_are_read_again_not_served_from_the_cache(tmp_path):
    root = tmp_path / "corpus"
    write_shards(root, shards=1, rows=3)
    assert len(load_contrastors_shards(root, cache_dir=str(tmp_path / "cache"))) == 3
    write_shards(root, shards=1, rows=4)
    assert len(load_contrastors_shards(root, cache_dir=str(tmp_path / "cache"))) == 4


@pytest.mark.parametrize("chunk", [7, 1 << 20])
def test_offsets_are_parsed_one_entry_at_a_time(chunk):
    import io

    offsets = {f"b/shard-{i}.jsonl.gz": {str(j): [j * 10, j * 10 + 10] for j in range(i * 40)} for i in range(4)}
    for text in (json.dumps(offsets), json.dumps(offsets, indent=2), "{}", " {\n} "):
        assert dict(contrastors.iter_object_items(io.StringIO(text), "offsets", chunk=chunk)) == json.loads(text)
    # lazily: after the first entries only a bounded part of a large file has been read
    text = json.dumps(offsets)
    handle = io.StringIO(text)
    items = contrastors.iter_object_items(handle, "offsets", chunk=64)
    assert next(items)[0] == "b/shard-0.jsonl.gz" and next(items)[0] == "b/shard-1.jsonl.gz"
    assert handle.tell() < len(text) // 2


def test_a_contrastors_yaml_entry_with_a_bucket_pattern_loads_its_shards(tmp_path):
    import yaml

    from st_contrast.data import DatasetSpec, build_training_data
    from st_contrast.data.contrastors import expand_braces

    assert expand_braces("s-{0008..0011}.jsonl.gz") == [f"s-{i:04d}.jsonl.gz" for i in range(8, 12)]
    data = write_shards(tmp_path / "nq", shards=4, rows=3)
    config = yaml.safe_load(f"""
datasets:
  - name: "nq_triples"
    bucket: "{tmp_path}/nq/shard-{{00001..00002}}.jsonl.gz"
    query_prefix: "search_query"
    document_prefix: "search_document"
    objective:
      type: "triplet"
      columns: ["query", "document", "negatives"]
""")
    spec = DatasetSpec.from_dict(config["datasets"][0])
    training = build_training_data(spec, cache_dir=str(tmp_path / "cache"))
    assert list(training.dataset["anchor"]) == [row["query"] for shard in data[1:3] for row in shard]
    assert training.dataset.column_names == ["anchor", "positive", "negative_1", "negative_2", "negative_3"]
    assert training.prompts == {
        "anchor": "search_query: ",
        "positive": "search_document: ",
        **{f"negative_{i}": "search_document: " for i in (1, 2, 3)},
    }


@pytest.mark.parametrize("offsets", [True, False])
def test_blank_lines_are_no_rows_for_the_index_the_loader_and_the_stream(tmp_path, offsets):
    """A blank line (mid-file, or a trailing "\\n\\n") is no row: counted by none of the index, the loader and the
    stream, so two ranks streaming by the index's counts and offsets read every record exactly once."""
    from st_contrast.data.stream_sources import open_stream_source
    from st_contrast.data.streaming import StreamingDataset

    root = tmp_path / "corpus"
    root.mkdir()
    lines = [json.dumps({"query": f"q{i}", "document": f"d{i}"}) for i in range(10)]
    lines.insert(3, "")
    with gzip.open(root / "shard-00000.jsonl.gz", "wt") as handle:
        handle.write("\n".join(lines) + "\n\n")
    assert index_contrastors_shards(root) == {"shard-00000.jsonl.gz": 10}
    if not offsets:
        (root / "offsets.json.gz").unlink()
    columns = {"query": "anchor", "document": "positive"}
    loaded = load_dataset_spec({"name": "c", "path": str(root), "columns": columns}, cache_dir=str(tmp_path / "c"))
    assert list(loaded["positive"]) == [f"d{i}" for i in range(10)]
    seen = []
    for rank in range(2):
        source = open_stream_source({"name": "c", "path": str(root), "stream": True, "shuffle_buffer": 1,
                                     "columns": columns})  # fmt: skip
        stream = StreamingDataset([source]).configure(1, seed=0, world_size=2, rank=rank, no_duplicates=False)
        seen += [row["positive"] for batch in stream for row in batch]
        stream.close()
    assert sorted(seen) == sorted(f"d{i}" for i in range(10))
