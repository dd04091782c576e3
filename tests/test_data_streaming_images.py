"""Image-text data streamed row by row: webdataset tar shards read front to back (from S3 on a real S3-compatible
server, moto on the loopback address), tables at URLs with image columns, and their positions, bad rows and counts;
checked against the images as written and against the indexed (not streamed) load of the same shards."""

from __future__ import annotations

import io
import json
import logging
import tarfile

import numpy as np
import pandas as pd
import pytest
import yaml
from image_text_helpers import random_images
from in_process import run_cli
from PIL import Image
from sentence_transformers import SentenceTransformer

import st_contrast.data.stream_tar as stream_tar
from st_contrast.data import (
    BadRows,
    DataError,
    ImageTextDataCollator,
    build_training_data,
    index_tar_shards,
    load_dataset_spec,
    write_tar_shards,
)
from st_contrast.data.columns import BadRowError
from st_contrast.data.images import image_identity
from st_contrast.data.stream_files import iter_file_rows
from st_contrast.data.stream_sources import open_stream_source

SHARD_SIZES = [5, 4, 5]


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _write_shard(path, samples):
    """``samples``: ``(key, {extension: payload bytes})`` in member order."""
    with tarfile.open(path, "w") as archive:
        for key, members in samples:
            for extension, payload in members.items():
                member = tarfile.TarInfo(f"{key}{extension}")
                member.size = len(payload)
                archive.addfile(member, io.BytesIO(payload))


def _pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def _decoded(rows, column="image"):
    """The rows' images as the trainer's collator decodes them."""
    seen = []
    collator = ImageTextDataCollator(preprocess_fn=lambda inputs, **kwargs: seen.append(inputs) or {})
    collator([{column: row[column], "text": row["text"]} for row in rows])
    return seen[0]


@pytest.fixture(scope="module")
def pictures(s3_server, tmp_path_factory):
    """3 shards of captioned random images on s3://image-stream/web (sizes.json beside them) and s3://image-stream/bare
    (no counts)."""
    root = tmp_path_factory.mktemp("pictures")
    images = random_images(sum(SHARD_SIZES), seed=3)
    number = 0
    for folder in ("web", "bare"):
        (root / folder).mkdir()
    sizes = {}
    for shard, size in enumerate(SHARD_SIZES):
        samples = []
        for _ in range(size):
            fields = json.dumps({"source": f"s{number}"}).encode()
            samples.append((f"{number:05d}", {".png": _png(images[number]), ".txt": b"a picture %d" % number,
                                              ".json": fields}))  # fmt: skip
            number += 1
        for folder in ("web", "bare"):
            _write_shard(root / folder / f"shard-{shard:03d}.tar", samples)
        sizes[f"shard-{shard:03d}.tar"] = size
    (root / "web" / "sizes.json").write_text(json.dumps(sizes))
    s3_server.upload(root / "web", "s3://image-stream/web")
    s3_server.upload(root / "bare", "s3://image-stream/bare")
    return {"root": root, "images": images}


def _streams(entry, world_size=2, batch_size=3, seed=5):
    parts = [build_training_data(entry, add_sample_index=True) for _ in range(world_size)]
    for rank, part in enumerate(parts):
        part.dataset.configure(batch_size=batch_size, seed=seed, world_size=world_size, rank=rank)
    return [part.dataset for part in parts]


WEB = {"name": "web", "path": "s3://image-stream/web/shard-{000..002}.tar", "columns": ["image", "text"],
       "shuffle_buffer": 4}  # fmt: skip


def test_tar_shards_from_s3_stream_every_sample_once_with_its_own_image(pictures, monkeypatch):
    monkeypatch.setattr(stream_tar, "count_tar_samples", lambda *a: pytest.fail("sizes.json gives the counts"))
    rank0, rank1 = _streams(WEB)
    assert rank0.num_samples == sum(SHARD_SIZES)
    batches = list(rank0) + list(rank1)
    assert len(batches) == 2 * (7 // 3)  # 7 rows per rank: 2 whole batches of 3
    rows = [row for batch in batches for row in batch]
    labels = [row["label"] for row in rows]
    assert len(set(labels)) == len(labels) == 12 and labels != sorted(labels)  # shuffled, none twice
    for row, image in zip(rows, _decoded(rows), strict=True):
        assert row["text"] == f"a picture {row['label']}"
        np.testing.assert_array_equal(_pixels(image), _pixels(pictures["images"][row["label"]]))
    reference = load_dataset_spec({**WEB, "stream": False})  # the shards indexed, images read by byte range
    by_text = {row["text"]: row["image"] for row in reference}
    for row in rows:
        indexed = by_text[row["text"]]
        assert (row["image"]["image_path"], row["image"]["offset"]) == (indexed["image_path"], indexed["offset"])
        shard = int(np.searchsorted(np.cumsum(SHARD_SIZES), row["label"], side="right"))
        assert row["image"]["image_path"] == f"s3://image-stream/web/shard-{shard:03d}.tar"


def test_without_counts_the_headers_are_counted_and_local_shards_stream_too(pictures):
    counted = _streams({**WEB, "path": "s3://image-stream/bare/*.tar"}, world_size=1)[0]
    assert counted.num_samples == sum(SHARD_SIZES)
    local = _streams({**WEB, "path": str(pictures["root"] / "bare" / "*.tar"), "stream": True}, world_size=1)[0]
    same = [[(row["text"], row["label"]) for row in batch] for batch in counted]
    assert same == [[(row["text"], row["label"]) for row in batch] for batch in local]
    assert len(same) == 4
    default = build_training_data({**WEB, "path": str(pictures["root"] / "bare" / "*.tar")})
    assert len(default.dataset) == 14  # local shards default to the indexed load


def test_index_tar_shards_writes_the_sizes_a_stream_then_reads(pictures, tmp_path, monkeypatch):
    for shard in (pictures["root"] / "bare").glob("*.tar"):
        (tmp_path / shard.name).write_bytes(shard.read_bytes())
    assert index_tar_shards(tmp_path) == {f"shard-{n:03d}.tar": size for n, size in enumerate(SHARD_SIZES)}
    assert json.loads((tmp_path / "sizes.json").read_text()) == json.loads(
        (pictures["root"] / "web" / "sizes.json").read_text()
    )
    monkeypatch.setattr(stream_tar, "count_tar_samples", lambda *a: pytest.fail("sizes.json gives the counts"))
    (stream,) = _streams({**WEB, "path": str(tmp_path / "*.tar"), "stream": True}, world_size=1)
    assert stream.num_samples == sum(SHARD_SIZES)
    with pytest.raises(DataError, match="no \\*.tar shards"):
        index_tar_shards(tmp_path / "sizes.json")


def test_a_resumed_stream_gives_the_same_batches_and_images(pictures):
    entry = {**WEB, "shuffle_buffer": 5}
    (reference,) = _streams(entry, world_size=1, batch_size=2)
    expected = [[(row["label"], row["image"]["offset"]) for row in batch] for batch in reference]
    for cut in (1, 3, 5):
        (stream,) = _streams(entry, world_size=1, batch_size=2)
        iterator = iter(stream)
        taken = [next(iterator) for _ in range(cut)]
        state = json.loads(json.dumps(stream.state_dict()))
        stream.close()
        (resumed,) = _streams(entry, world_size=1, batch_size=2)
        resumed.load_state_dict(state)
        rest = list(resumed)
        got = [[(row["label"], row["image"]["offset"]) for row in batch] for batch in taken + rest]
        assert got == expected, f"resumed after batch {cut}"
        for image, row in zip(_decoded(rest[0]), rest[0], strict=True):
            np.testing.assert_array_equal(_pixels(image), _pixels(pictures["images"][row["label"]]))


def test_repeated_images_wait_for_a_later_batch_and_survive_a_resume_as_byte_ranges(s3_server, tmp_path):
    images = random_images(3, seed=9)
    samples = [(f"{n:04d}", {".png": _png(images[n % 3]), ".txt": b"caption %d" % n}) for n in range(12)]
    (tmp_path / "rep").mkdir()
    _write_shard(tmp_path / "rep" / "shard-0.tar", samples)
    s3_server.upload(tmp_path / "rep", "s3://image-stream/rep")
    entry = {
        "name": "rep",
        "path": "s3://image-stream/rep/shard-0.tar",
        "columns": ["image", "text"],
        "shuffle_buffer": 12,
    }
    (stream,) = _streams(entry, world_size=1, batch_size=3)
    batches, states = [], []
    for batch in stream:
        batches.append(batch)
        states.append(json.loads(json.dumps(stream.state_dict())))
    for batch in batches:  # each of the 3 images once per batch: a repeated image would be a false negative
        assert sorted(row["label"] % 3 for row in batch) == [0, 1, 2], [row["label"] for row in batch]
    cut = next(i for i, state in enumerate(states) if state["datasets"]["rep"]["pending"])
    waiting = states[cut]["datasets"]["rep"]["pending"][0]
    pending = waiting["image"]
    assert pending["image_bytes"] is None and pending["image_path"] == "s3://image-stream/rep/shard-0.tar"
    same = {"image_bytes": _png(images[waiting["label"] % 3])}  # kept apart from its repeats after a resume too
    assert image_identity(pending) == image_identity(same) != image_identity({"image_bytes": _png(images[0])[:-1]})
    (resumed,) = _streams(entry, world_size=1, batch_size=3)
    resumed.load_state_dict(states[cut])
    rest = list(resumed)
    assert [[row["label"] for row in b] for b in batches[cut + 1 :]] == [[row["label"] for row in b] for b in rest]
    for batch in rest:  # the deferred rows' images are read again by byte range
        for image, row in zip(_decoded(batch), batch, strict=True):
            np.testing.assert_array_equal(_pixels(image), _pixels(images[row["label"] % 3]))


@pytest.fixture
def bad_shard(tmp_path):
    images = random_images(6, seed=4)
    samples = [(f"{n:04d}", {".png": _png(images[n]), ".txt": b"caption %d" % n}) for n in range(6)]
    samples[1] = ("0001", {".png": _png(images[1])})  # no caption
    samples[3] = ("0003", {".png": _png(images[3])[:60], ".txt": b"caption 3"})  # cut-off PNG
    samples[4] = ("0004", {".png": _png(images[4]), ".txt": b"caption \xff4"})  # not UTF-8
    _write_shard(tmp_path / "bad.tar", samples)
    return tmp_path / "bad.tar"


def test_bad_samples_raise_naming_shard_row_and_key_or_are_skipped_and_counted(bad_shard):
    entry = {"name": "bad", "path": str(bad_shard), "columns": ["image", "text"], "stream": True, "shuffle_buffer": 1}
    (stream,) = _streams(entry, world_size=1, batch_size=2)
    with pytest.raises(DataError, match=r"bad\.tar, row 1 \(key '0001'\): the sample has no \.txt or \.json"):
        next(iter(stream))
    stream.close()
    (skipping,) = _streams({**entry, "on_bad_rows": "skip"}, world_size=1, batch_size=3)
    batch = next(iter(skipping))  # the epoch counts the bad rows too: its second batch starts the next pass
    assert [row["text"] for row in batch] == ["caption 0", "caption 2", "caption 5"]
    assert skipping.bad_rows()["bad"].as_dict()["by_reason"] == {
        "missing text": 1,
        "undecodable image": 1,
        "not UTF-8": 1,
    }
    assert all(row["image"]["image_bytes"] is not None for row in batch)  # checked once, not read again
    skipping.close()


def test_indexed_and_streamed_shards_group_members_as_webdataset_does(tmp_path):
    images = random_images(3, seed=8)
    jpeg = io.BytesIO()
    images[2].save(jpeg, format="JPEG")
    samples = [
        ("a", {".txt": b"caption a", ".png": _png(images[0])}),  # caption first
        ("b", {".png": _png(images[1]), ".jpg": jpeg.getvalue(), ".txt": b"caption b"}),  # two images: .jpg wins
    ]
    _write_shard(tmp_path / "order.tar", samples)
    entry = {"name": "order", "path": str(tmp_path / "order.tar"), "columns": ["image", "text"], "shuffle_buffer": 1}
    indexed = list(load_dataset_spec(entry))
    source = open_stream_source({**entry, "stream": True})
    streamed = [row for _, row in iter_file_rows(source, 0, 0, source.files[0].rows)]
    assert [row["text"] for row in indexed] == [row["text"] for row in streamed] == ["caption a", "caption b"]
    for row in (indexed[1], streamed[1]):
        decoded = _decoded([row])[0]
        np.testing.assert_array_equal(_pixels(decoded), _pixels(Image.open(io.BytesIO(jpeg.getvalue()))))
    assert [(r["image"]["offset"], r["image"]["size"]) for r in indexed] == [
        (r["image"]["offset"], r["image"]["size"]) for r in streamed
    ]

    (tmp_path / "split").mkdir()  # key "a" comes back after "b": a third sample, without an image
    _write_shard(tmp_path / "split" / "split.tar", [*samples, ("a", {".json": b'{"source": "late"}'})])
    split = {**entry, "path": str(tmp_path / "split" / "split.tar")}
    with pytest.raises(DataError, match=r"split\.tar, row 2 \(key 'a'\): the sample has no image member"):
        load_dataset_spec(split)
    source = open_stream_source({**split, "stream": True})
    rows = [row for _, row in iter_file_rows(source, 0, 0, source.files[0].rows)]
    assert len(rows) == 3 and rows[2].reason == "missing image"


def test_a_shard_cut_short_counts_its_lost_samples(bad_shard, tmp_path):
    data = bad_shard.read_bytes()
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "cut.tar").write_bytes(data[: len(data) // 2])
    (tmp_path / "cut" / "sizes.json").write_text(json.dumps({"cut.tar": 6}))
    entry = {"name": "cut", "path": str(tmp_path / "cut" / "cut.tar"), "columns": ["image", "text"], "stream": True,
             "on_bad_rows": "skip", "shuffle_buffer": 1}  # fmt: skip
    source = open_stream_source(entry)
    items = list(iter_file_rows(source, 0, 0, source.files[0].rows))
    assert [row for row, _ in items] == list(range(6))  # every row of the count accounted for, in place
    assert items[0][1]["text"] == "caption 0" and items[1][1].reason == "missing text"
    assert isinstance(items[-1][1], BadRowError) and items[-1][1].reason == "truncated file"
    assert "cut.tar" in str(items[-1][1])


@pytest.mark.parametrize("cut", [0, 300])  # empty, or cut within the first 512-byte header
def test_a_shard_cut_within_its_first_header_loses_its_counted_samples(bad_shard, tmp_path, cut):
    """An object emptied or cut in its first header is not a readable tar at all: with its samples counted
    (sizes.json) and on_bad_rows: skip, they are counted as lost like those of a shard cut later; without a count
    nothing says how many are lost, so it stays an error."""
    (tmp_path / "cut").mkdir()
    data = bad_shard.read_bytes()
    (tmp_path / "cut" / "a.tar").write_bytes(data)
    (tmp_path / "cut" / "b.tar").write_bytes(data[:cut])
    entry = {"name": "cut", "path": str(tmp_path / "cut"), "columns": ["image", "text"], "stream": True,
             "on_bad_rows": "skip", "shuffle_buffer": 1}  # fmt: skip
    with pytest.raises(DataError, match=r"b\.tar: not a readable tar shard"):
        open_stream_source(entry).count_rows()
    (tmp_path / "cut" / "sizes.json").write_text(json.dumps({"a.tar": 6, "b.tar": 6}))
    source = open_stream_source(entry)
    items = list(iter_file_rows(source, 1, 0, source.files[1].rows))
    assert [row for row, _ in items] == list(range(6))
    assert all(isinstance(item, BadRowError) and item.reason == "truncated file" for _, item in items)
    assert "b.tar" in str(items[0][1])


def test_a_table_at_a_url_with_image_columns_streams_and_loads(s3_server, tmp_path):
    images = random_images(4, seed=6)
    (tmp_path / "table" / "pics").mkdir(parents=True)
    for n in range(3):
        images[n].save(tmp_path / "table" / "pics" / f"{n}.png")
    (tmp_path / "elsewhere").mkdir()
    images[3].save(tmp_path / "elsewhere" / "3.png")
    rows = [{"picture": f"pics/{n}.png", "caption": f"picture {n}"} for n in range(3)]
    rows.append({"picture": "s3://image-stream/elsewhere/3.png", "caption": "picture 3"})
    rows.insert(2, {"picture": "pics/gone.png", "caption": "picture 4"})
    (tmp_path / "table" / "rows.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    s3_server.upload(tmp_path / "table", "s3://image-stream/table")
    s3_server.upload(tmp_path / "table" / "pics", "s3://image-stream/table/pics")
    s3_server.upload(tmp_path / "elsewhere", "s3://image-stream/elsewhere")
    entry = {"name": "table", "path": "s3://image-stream/table/rows.jsonl", "columns": {"picture": "image", "caption":
             "text"}, "image_columns": ["picture"], "shuffle_buffer": 1, "query_prefix": "query: "}  # fmt: skip

    data = build_training_data({**entry, "on_bad_rows": "skip"})
    assert data.prompts == {"text": "query: "}  # never a prompt on the image column
    data.dataset.configure(batch_size=4, seed=0)
    (batch,) = list(data.dataset)
    assert [row["text"] for row in batch] == ["picture 0", "picture 1", "picture 2", "picture 3"]
    assert batch[1]["image"]["image_path"] == "s3://image-stream/table/pics/1.png"
    for image, original in zip(_decoded(batch), images, strict=True):
        np.testing.assert_array_equal(_pixels(image), _pixels(original))
    assert data.dataset.bad_rows()["table"].as_dict()["by_reason"] == {"missing image": 1}

    bad = BadRows("table")
    cached = load_dataset_spec({**entry, "on_bad_rows": "skip"}, bad_rows=bad)  # stream: false, into the cache
    assert cached["text"] == ["picture 0", "picture 1", "picture 2", "picture 3"]
    assert cached[0]["image"]["image_bytes"] is None  # the cache keeps where the images are, not copies
    for image, original in zip(_decoded(cached), images, strict=True):
        np.testing.assert_array_equal(_pixels(image), _pixels(original))
    assert bad.as_dict()["by_reason"] == {"missing image": 1}

    (raising,) = _streams({**entry, "columns": {"picture": "image", "caption": "text"}}, world_size=1, batch_size=5)
    (everything,) = list(raising)  # a missing image at a URL is found when its batch is built, naming the row
    with pytest.raises(DataError, match=r"rows\.jsonl, row 2 .*column 'image'.*pics/gone\.png"):
        _decoded(everything)


def test_st_contrast_train_streams_tar_shards_from_s3_into_a_two_tower_model(pictures, tmp_path, minilm_path):
    vision = {"model_type": "vit", "image_size": 16, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 1,
              "num_attention_heads": 2, "intermediate_size": 64}  # fmt: skip
    config = {
        "output_dir": str(tmp_path / "run"),
        "model": {"name_or_path": minilm_path, "packed": False, "lock": "text", "vision": {"config": vision}},
        "loss": {"name": "CLIPLoss"},
        "data": {"datasets": [WEB]},
        "training": {"per_device_train_batch_size": 4, "max_steps": 3, "save_steps": 2, "logging_steps": 1,
                     "learning_rate": 1e-3},
    }  # fmt: skip
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    run_cli("train", str(tmp_path / "run.yaml"))
    state = json.loads((tmp_path / "run" / "checkpoint-2" / "stream_state_0.json").read_text())
    assert state["step"] == 2 and state["datasets"]["web"]["window_start"]["shard"].startswith("s3://image-stream/web/")
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = [entry["loss"] for entry in log if "loss" in entry]
    assert log[-1]["samples_seen"] == 12  # 3 steps of 4 image-caption pairs
    assert len(losses) == 3 and all(np.isfinite(losses))
    model = SentenceTransformer(str(tmp_path / "run" / "model"), device="cpu")  # plain Sentence Transformers
    image, text = model.encode([pictures["images"][0]]), model.encode(["a picture 0"])
    assert image.shape == text.shape == (1, 384) and np.isfinite(image).all()


def test_storage_options_reach_the_images_of_their_bucket(pictures, s3_server, tmp_path, monkeypatch, request, caplog):
    import s3fs

    import st_contrast.data.urls as urls

    monkeypatch.setattr(urls, "_BUCKET_OPTIONS", {})  # this test's registrations end with it
    request.addfinalizer(s3fs.S3FileSystem.clear_instance_cache)  # and so do filesystems made for the wrong endpoint
    (tmp_path / "table").mkdir()
    pictures["images"][0].save(tmp_path / "table" / "0.png")
    (tmp_path / "table" / "rows.jsonl").write_text(json.dumps({"image": "0.png", "text": "picture 0"}) + "\n")
    s3_server.upload(tmp_path / "table", "s3://image-options/table")
    s3_server.upload(pictures["root"] / "web", "s3://image-options/web")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # the environment points nowhere
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    s3fs.S3FileSystem.clear_instance_cache()
    table = {"name": "table", "path": "s3://image-options/table/rows.jsonl", "image_columns": ["image"]}
    with pytest.raises(DataError, match="s3://image-options/table/.*cannot be read"):
        build_training_data(table)
    options = {"endpoint_url": s3_server.endpoint, "key": "testing", "secret": "testing"}

    data = build_training_data({**table, "storage_options": options})  # streamed; each image read per batch
    data.dataset.configure(batch_size=1, seed=0)
    (batch,) = list(data.dataset)
    assert batch[0]["image"]["image_bytes"] is None
    np.testing.assert_array_equal(_pixels(_decoded(batch)[0]), _pixels(pictures["images"][0]))

    indexed = load_dataset_spec({**WEB, "path": "s3://image-options/web/*.tar", "stream": False,
                                 "storage_options": options})  # fmt: skip
    assert len(indexed) == sum(SHARD_SIZES)
    for image, row in zip(_decoded(list(indexed)), indexed, strict=True):
        np.testing.assert_array_equal(_pixels(image), _pixels(pictures["images"][int(row["text"].split()[-1])]))
    with caplog.at_level(logging.WARNING, logger="st_contrast.data.urls"):  # options corrected: the latest win
        build_training_data({**table, "storage_options": {**options, "key": "other"}})
    assert "storage_options for s3://image-options replaced" in caplog.text
    assert urls._BUCKET_OPTIONS["s3://image-options"]["key"] == "other"


def test_write_tar_shards_round_trips_a_table_through_the_stream(tmp_path):
    images = random_images(5, seed=8)
    (tmp_path / "pics").mkdir()
    rows = []
    for n, image in enumerate(images):
        name = f"pics/{n}." + ("png", "jpg", "tiff", "png", "png")[n]
        image.save(tmp_path / name)
        rows.append({"image": name, "caption": f"picture {n}", "source": f"s{n}", "score": n / 2})
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    shards = write_tar_shards(tmp_path / "rows.jsonl", tmp_path / "shards", shard_size=2)
    assert [shard.name for shard in shards] == ["shard-00000.tar", "shard-00001.tar", "shard-00002.tar"]
    with tarfile.open(shards[1]) as archive:  # rows 2 and 3: the TIFF stored as PNG, every encoded image kept
        assert archive.getnames() == [f"0000000{n}{suffix}" for n in (2, 3) for suffix in (".png", ".txt", ".json")]
        assert archive.extractfile("00000003.png").read() == (tmp_path / "pics" / "3.png").read_bytes()
    with tarfile.open(shards[0]) as archive:
        assert archive.extractfile("00000001.jpg").read() == (tmp_path / "pics" / "1.jpg").read_bytes()
    entry = {"name": "written", "path": str(tmp_path / "shards"), "stream": True, "shuffle_buffer": 1,
             "columns": ["image", "text", "source"], "label_column": "score"}  # fmt: skip
    (batch,) = list(build_training_data(entry).dataset.configure(batch_size=5))
    assert [(row["text"], row["source"], row["label"]) for row in batch] == [
        (row["caption"], row["source"], row["score"]) for row in rows
    ]
    for image, row in zip(_decoded(batch), rows, strict=True):
        np.testing.assert_array_equal(_pixels(image), _pixels(Image.open(tmp_path / row["image"])))


def test_an_img2dataset_folder_streams_its_tar_shards(bad_shard, tmp_path):
    """img2dataset writes NNNNN_stats.json and NNNNN.parquet beside each NNNNN.tar: the folder streams its shards."""
    folder = tmp_path / "img2dataset"
    folder.mkdir()
    (folder / "00000.tar").write_bytes(bad_shard.read_bytes())
    (folder / "00000_stats.json").write_text(json.dumps({"count": 6, "successes": 6}))
    pd.DataFrame({"key": [f"{n:04d}" for n in range(6)], "caption": ["x"] * 6}).to_parquet(folder / "00000.parquet")
    source = open_stream_source({"name": "web", "path": str(folder), "columns": ["image", "text"], "stream": True,
                                 "on_bad_rows": "skip", "shuffle_buffer": 1})  # fmt: skip
    assert [file.url.rsplit("/", 1)[-1] for file in source.files] == ["00000.tar"]
    rows = [row for _, row in iter_file_rows(source, 0, 0, None)]
    assert len(rows) == 6 and rows[0]["text"] == "caption 0"
