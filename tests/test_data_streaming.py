"""Streamed datasets from a real S3-compatible server (moto on the loopback address), HTTP and local files.

Every rank reads disjoint rows, each row once per epoch, one dataset per step on all ranks, no repeated text within a
batch, memory bounded by the shuffle buffer and nothing copied to local disk; a position taken after any batch and
restored in a fresh stream continues with exactly the batches of the uninterrupted stream. The ranks are simulated
in one process (``configure(rank=r, world_size=2)``); the torchrun runs are in test_cli_streaming.py.
"""

from __future__ import annotations

import functools
import gzip
import http.server
import json
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import pytest
from stream_helpers import write_parquet, write_shards

from st_contrast.data import BadRows, DataError, StreamingDataset, build_training_data, load_dataset_spec

ROOT = Path(__file__).resolve().parents[1]
SIZES = [28, 32, 30, 30]  # 120 rows: 60 per rank, 15 batches of 4
BATCH = 4


@pytest.fixture(scope="module")
def corpus(s3_server, tmp_path_factory):
    """4 contrastors shards and a Parquet file, uploaded to s3://corpus/."""
    root = tmp_path_factory.mktemp("corpus")
    pairs = write_shards(root / "pairs", SIZES)
    extra = write_parquet(root / "extra", 40)
    s3_server.upload(root / "pairs", "s3://corpus/pairs")
    s3_server.upload(root / "extra", "s3://corpus/extra")
    return {"root": root, "pairs": pairs, "extra": extra}


def specs(**options) -> list[dict]:
    return [
        {"name": "pairs", "path": "s3://corpus/pairs/shard-{00000..00003}.jsonl.gz", "objective": "paired", **options},
        {"name": "extra", "path": "s3://corpus/extra", "columns": {"question": "anchor", "answer": "positive"}},
    ]


def streams(entries: list[dict], world_size: int = 2, batch_size: int = BATCH, seed: int = 7) -> list:
    data = [build_training_data(entries, add_sample_index=True) for _ in range(world_size)]
    for rank, part in enumerate(data):
        part.dataset.configure(batch_size=batch_size, seed=seed, world_size=world_size, rank=rank)
    return [part.dataset for part in data]


def expected_row(corpus: dict, label: int) -> tuple[str, str]:
    rows = [(r["query"], r["document"]) for r in corpus["pairs"]] + [
        (r["question"], r["answer"]) for r in corpus["extra"]
    ]
    return rows[label]


def test_two_ranks_read_every_row_once_per_epoch_one_dataset_per_step(corpus):
    rank0, rank1 = streams(specs(shuffle_buffer=16))
    assert isinstance(rank0, StreamingDataset) and rank0.num_samples == 160
    assert len(rank0) == len(rank1) == 15 + 5
    for epoch in range(2):
        batches0, batches1 = list(rank0), list(rank1)
        assert len(batches0) == len(batches1) == 20
        labels = []
        for step, (batch0, batch1) in enumerate(zip(batches0, batches1, strict=True)):
            names = {row["dataset_name"] for row in batch0 + batch1}
            assert len(names) == 1, f"epoch {epoch} step {step} mixes datasets {names}"
            assert len(batch0) == len(batch1) == BATCH
            for row in batch0 + batch1:
                assert (row["anchor"], row["positive"]) == expected_row(corpus, row["label"])
            labels += [row["label"] for row in batch0 + batch1]
        assert sorted(labels) == list(range(160)), f"epoch {epoch}: not every row exactly once"
        ranks = (
            {row["label"] for batch in batches0 for row in batch},
            {row["label"] for batch in batches1 for row in batch},
        )
        assert not ranks[0] & ranks[1]
        assert labels[:8] != sorted(labels[:8]) or labels[8:16] != sorted(labels[8:16])  # shuffled
        if epoch == 0:
            first_epoch = labels
    assert labels != first_epoch  # a new order each epoch


def test_a_restored_position_continues_with_the_next_unseen_row(corpus):
    entries = specs(shuffle_buffer=11)
    reference = streams(entries)
    expected = [list(stream) + list(stream) for stream in reference]  # two epochs
    for rank in (0, 1):
        for cut in (1, 7, 19, 20, 26):
            stream = streams(entries)[rank]
            taken, iterator = [], iter(stream)
            while len(taken) < cut:
                batch = next(iterator, None)
                if batch is None:
                    iterator = iter(stream)
                    continue
                taken.append(batch)
            state = json.loads(json.dumps(stream.state_dict()))  # what the checkpoint file holds
            stream.close()
            resumed = streams(entries)[rank]
            resumed.load_state_dict(state)
            rest = list(resumed) + (list(resumed) if cut < 20 else [])
            assert taken + rest == expected[rank], f"rank {rank}, resumed after batch {cut}"
            position = state["datasets"]["pairs"]["window_start"]
            assert position["shard"].startswith("s3://corpus/pairs/shard-") and position["row"] >= 0


def test_batches_never_repeat_a_text_and_deferred_rows_survive_a_resume(s3_server, tmp_path):
    write_shards(tmp_path / "dup", [24, 24], duplicate_every=3)  # each query on 3 rows
    s3_server.upload(tmp_path / "dup", "s3://corpus/dup")
    entries = [{"name": "dup", "path": "s3://corpus/dup", "objective": "paired", "shuffle_buffer": 12}]
    (stream,) = streams(entries, world_size=1, batch_size=6)
    batches = list(stream)
    for batch in batches:
        texts = [row["anchor"] for row in batch] + [row["positive"] for row in batch]
        assert len(texts) == len(set(texts)), batch
    states = []
    (probe,) = streams(entries, world_size=1, batch_size=6)
    for _ in probe:
        states.append(json.loads(json.dumps(probe.state_dict())))
    cut = next(i for i, state in enumerate(states) if state["datasets"]["dup"]["pending"])
    (resumed,) = streams(entries, world_size=1, batch_size=6)
    resumed.load_state_dict(states[cut])
    assert batches[: cut + 1] + list(resumed) == batches


def test_memory_is_bounded_by_the_buffer_and_nothing_is_copied_to_disk(s3_server, tmp_path, monkeypatch):
    write_shards(tmp_path / "big", [3000, 3000])
    s3_server.upload(tmp_path / "big", "s3://corpus/big")
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    (stream,) = streams([{"name": "big", "path": "s3://corpus/big", "objective": "paired", "shuffle_buffer": 100}], 1)
    iterator = iter(stream)
    next(iterator)
    reader = stream._streams[0]._reader
    reader._thread.join(timeout=2)  # let it fill its queue
    assert reader.rows_read == 100  # the first batch needed one window
    assert 100 < reader.rows_fetched <= 100 + 100 + 2 * 25  # the read-ahead stays within the buffer (+2 chunks)
    for _ in range(200):
        next(iterator)
    assert not cache.exists() or not any(path.is_file() for path in cache.rglob("*"))
    stream.close()


@pytest.fixture()
def http_corpus(corpus):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(corpus["root"]))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_http_file_urls_and_local_paths_stream_the_same_rows(corpus, http_corpus):
    pattern = "pairs/shard-{00000..00003}.jsonl.gz"
    local = str(corpus["root"] / pattern)
    urls = [f"s3://corpus/{pattern}", f"{http_corpus}/{pattern}", f"file://{local}", local]
    results = []
    for url in urls:
        (stream,) = streams([{"name": "p", "path": url, "objective": "paired", "stream": True}], world_size=1)
        results.append(list(stream))
        stream.close()
    assert all(result == results[0] for result in results[1:])


def test_a_url_can_be_loaded_into_the_cache_too(corpus, tmp_path):
    spec = {"name": "pairs", "path": "s3://corpus/pairs", "objective": "paired", "max_rows": 50}
    loaded = load_dataset_spec(spec, cache_dir=str(tmp_path / "cache"))
    assert loaded.to_list() == [{"anchor": r["query"], "positive": r["document"]} for r in corpus["pairs"][:50]]


# errors ---------------------------------------------------------------------------------------------------------


def _bad_corpus(root: Path) -> dict:
    """4 shards: a malformed line (shard 1, row 5), an empty text (shard 2, row 0), a missing column (shard 2, row 3),
    a truncated gzip stream (shard 3 loses its rows from 9 on: 11 rows)."""
    write_shards(root, [10, 10, 10, 20])
    shard = root / "shard-00001.jsonl.gz"
    lines = gzip.decompress(shard.read_bytes()).split(b"\n")
    lines[5] = lines[5][:-4]
    shard.write_bytes(gzip.compress(b"\n".join(lines)))
    shard = root / "shard-00002.jsonl.gz"
    lines = gzip.decompress(shard.read_bytes()).split(b"\n")
    lines[0] = json.dumps({"query": "  ", "document": "d"}).encode()
    lines[3] = json.dumps({"query": "q"}).encode()
    shard.write_bytes(gzip.compress(b"\n".join(lines)))
    shard = root / "shard-00003.jsonl.gz"
    text = b"".join(json.dumps({"query": f"q3-{i}", "document": f"d3-{i}"}).encode() + b"\n" for i in range(20))
    compressed = gzip.compress(text)
    cut = next(
        n for n in range(20, len(compressed)) if zlib.decompressobj(31).decompress(compressed[:n]).count(b"\n") == 9
    )
    shard.write_bytes(compressed[:cut])  # the stream ends inside row 9
    good = set(range(50)) - {15, 20, 23} - set(range(39, 50))
    return {
        "good": good,
        "by_reason": {"malformed JSON": 1, "empty text": 1, "missing column": 1, "truncated file": 11},
    }


@pytest.fixture(scope="module")
def bad_corpus(s3_server, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad") / "bad"
    expected = _bad_corpus(root)
    s3_server.upload(root, "s3://corpus/bad")
    return expected


def test_bad_rows_raise_naming_the_url_and_the_row(bad_corpus):
    (stream,) = streams([{"name": "bad", "path": "s3://corpus/bad", "objective": "paired", "shuffle_buffer": 1}], 1, 1)
    with pytest.raises(DataError, match=r"s3://corpus/bad/shard-00001\.jsonl\.gz, row 5 \(line 6\): malformed JSON"):
        list(stream)
    entry = {"name": "bad", "path": "s3://corpus/bad/shard-00003.jsonl.gz", "objective": "paired", "shuffle_buffer": 1}
    (stream,) = streams([entry], 1, 1)
    with pytest.raises(
        DataError, match=r"s3://corpus/bad/shard-00003\.jsonl\.gz, after line 9: the gzip stream is trunc"
    ):
        list(stream)


def test_skipped_bad_rows_are_counted_exactly(bad_corpus, tmp_path):
    entry = {"name": "bad", "path": "s3://corpus/bad", "objective": "paired", "on_bad_rows": "skip"}
    (stream,) = streams([{**entry, "shuffle_buffer": 1}], world_size=1, batch_size=1)  # file order
    good = len(bad_corpus["good"])
    iterator = iter(stream)
    seen = [next(iterator)[0]["label"] for _ in range(good + 1)]  # the last one comes from the next pass
    assert seen[:good] == sorted(bad_corpus["good"]) and seen[good] == 0
    assert stream.bad_rows()["bad"].as_dict()["by_reason"] == bad_corpus["by_reason"]

    shuffled = streams([{**entry, "shuffle_buffer": 8}], world_size=2, batch_size=1)
    labels = set()
    for rank in shuffled:
        labels |= {batch[0]["label"] for batch, _ in zip(rank, range(10), strict=False)}
    assert labels <= bad_corpus["good"] and len(labels) == 20  # bad rows never reach a batch

    loaded_counts = BadRows("bad")
    loaded = load_dataset_spec(entry, cache_dir=str(tmp_path / "cache"), bad_rows=loaded_counts)
    assert len(loaded) == good and loaded_counts.as_dict()["by_reason"] == bad_corpus["by_reason"]


def test_missing_bucket_object_and_denied_access_name_the_url(corpus, tmp_path):
    with pytest.raises(DataError, match=r"s3://no-such-bucket/pairs.*the bucket does not exist"):
        build_training_data({"name": "m", "path": "s3://no-such-bucket/pairs"})
    with pytest.raises(DataError, match=r"no such file or object: s3://corpus/pairs/shard-00004\.jsonl\.gz"):
        build_training_data({"name": "m", "path": "s3://corpus/pairs/shard-{00000..00004}.jsonl.gz"})
    with pytest.raises(DataError, match=r"s3://corpus/nothing-here: no such file or object"):
        build_training_data({"name": "m", "path": "s3://corpus/nothing-here"})


def test_denied_access_names_the_url(tmp_path, monkeypatch):
    from s3_server import S3Server

    server = S3Server(tmp_path, auth=True)  # every request with the dummy keys is refused
    try:
        entry = {"name": "d", "path": "s3://corpus/pairs", "storage_options": {"endpoint_url": server.endpoint}}
        with pytest.raises(DataError, match=r"s3://corpus/pairs: access denied"):
            build_training_data(entry)
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _stop_readers():
    yield
    from st_contrast.data.stream_reader import _close_readers

    _close_readers()


def test_streaming_and_decoding_images_do_not_import_sentence_transformers(corpus):
    """A reader process (the streaming benchmarks' workers) pays for torch and datasets, not for the training stack."""
    pattern = str(corpus["root"] / "pairs" / "shard-{00000..00003}.jsonl.gz")
    script = f"""
import sys
from st_contrast.data import build_training_data
from st_contrast.data.image_decoding import decode_rows
stream = build_training_data({{"name": "p", "path": {pattern!r}, "objective": "paired", "stream": True}}).dataset
rows = sum(len(decode_rows(batch)) for batch in stream.configure(batch_size={BATCH}, seed=0))
print(rows, [name for name in ("sentence_transformers", "transformers") if name in sys.modules])
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == [str(sum(SIZES)), "[]"]
