"""Image columns of training data: paths, bytes, PIL images and tar shards as lazy references, decoded per batch,
with errors naming the image and the data row; the offline digits and shapes sets."""

from __future__ import annotations

import io
import json
import tarfile

import datasets
import numpy as np
import pytest
from image_text_helpers import random_images
from PIL import Image

from st_contrast.data import DataError, ImageTextDataCollator, build_training_data, load_dataset_spec
from st_contrast.data.bad_rows import BadRows
from st_contrast.data.image_decoding import decode_rows
from st_contrast.data.synthetic_images import COLOURS, write_digits, write_shapes


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _collate(rows, columns=("image", "caption")):
    """The rows as the collator hands them to the model: decoded images, texts unchanged."""
    decoded = []
    collator = ImageTextDataCollator(preprocess_fn=lambda inputs, **kwargs: decoded.append(inputs) or {})
    collator([{column: row[column] for column in columns} for row in rows])
    return decoded


@pytest.fixture
def image_folder(tmp_path):
    images = random_images(3)
    (tmp_path / "pics").mkdir()
    for number, image in enumerate(images):
        image.save(tmp_path / "pics" / f"{number}.png")
    return tmp_path, images


def test_jsonl_paths_relative_to_the_file_are_decoded_per_batch(image_folder):
    folder, images = image_folder
    rows = [{"image": f"pics/{n}.png", "caption": f"picture {n}"} for n in range(3)]
    (folder / "data.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    data = load_dataset_spec({"name": "pics", "path": str(folder / "data.jsonl"), "image_columns": ["image"]})
    assert data.column_names == ["image", "caption"]
    assert data[0]["image"]["image_path"] == str(folder / "pics" / "0.png")  # a reference, nothing decoded
    decoded_images, captions = _collate(data)
    assert captions == ["picture 0", "picture 1", "picture 2"]
    for decoded, original in zip(decoded_images, images, strict=True):
        assert np.array_equal(np.asarray(decoded), np.asarray(original))


def test_parquet_bytes_csv_paths_and_datasets_images(image_folder):
    folder, images = image_folder
    datasets.Dataset.from_dict({"picture": [_png(image) for image in images], "text": ["a", "b", "c"]}).to_parquet(
        folder / "data.parquet"
    )
    (folder / "data.csv").write_text("text,picture\n" + "".join(f"t{n},pics/{n}.png\n" for n in range(3)))
    datasets.Dataset.from_dict({"picture": images, "text": ["a", "b", "c"]}).save_to_disk(str(folder / "saved"))
    for path in ("data.parquet", "data.csv", "saved"):
        spec = {"name": "x", "path": str(folder / path), "columns": {"picture": "anchor", "text": "positive"}}
        data = load_dataset_spec({**spec, "image_columns": ["picture"]})
        decoded, _ = _collate(data, ("anchor", "positive"))
        assert np.array_equal(np.asarray(decoded[2]), np.asarray(images[2])), path


def _write_shard(path, images, corrupt=()):
    with tarfile.open(path, "w") as archive:
        for number, image in enumerate(images):
            png = _png(image)[:40] if number in corrupt else _png(image)
            for name, payload in ((f"{number:04d}.png", png),
                                  (f"{number:04d}.txt", f"caption {number}".encode()),
                                  (f"{number:04d}.json", json.dumps({"source": f"s{number}"}).encode())):  # fmt: skip
                member = tarfile.TarInfo(name)
                member.size = len(payload)
                archive.addfile(member, io.BytesIO(payload))


def test_webdataset_tar_shards(tmp_path):
    images = random_images(3)
    _write_shard(tmp_path / "shard-0.tar", images)
    data = load_dataset_spec({"name": "web", "path": str(tmp_path / "*.tar"), "columns": ["image", "text"]})
    decoded, captions = _collate(data, ("image", "text"))
    assert captions == ["caption 0", "caption 1", "caption 2"]
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(decoded, images, strict=True))
    assert load_dataset_spec({"name": "web", "path": str(tmp_path / "shard-0.tar")})["source"] == ["s0", "s1", "s2"]


def test_tar_shards_from_s3_can_be_indexed_and_their_images_read_by_range(tmp_path, s3_server):
    images = random_images(4)
    (tmp_path / "shards").mkdir()
    _write_shard(tmp_path / "shards" / "shard-0000.tar", images[:2])
    _write_shard(tmp_path / "shards" / "shard-0001.tar", images[2:])
    s3_server.upload(tmp_path / "shards", "s3://pictures/web")
    spec = {"name": "web", "path": "s3://pictures/web/shard-{0000..0001}.tar", "columns": ["image", "text"]}
    data = load_dataset_spec(spec)
    assert data[3]["image"]["image_path"] == "s3://pictures/web/shard-0001.tar"  # a byte range, nothing copied
    decoded, captions = _collate(data, ("image", "text"))
    assert captions == ["caption 0", "caption 1", "caption 0", "caption 1"]
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(decoded, images, strict=True))
    assert len(load_dataset_spec({**spec, "path": "s3://pictures/web/*.tar"})) == 4
    with pytest.raises(DataError, match=r"s3://pictures/web/shard-0002\.tar"):
        load_dataset_spec({**spec, "path": "s3://pictures/web/shard-0002.tar"})


def test_image_urls_in_a_local_table_are_read_when_their_batch_is_built(image_folder, s3_server):
    folder, images = image_folder
    s3_server.upload(folder / "pics", "s3://pictures/cells")
    urls = [f"s3://pictures/cells/{n}.png" for n in range(3)]
    urls[1] = (folder / "pics" / "1.png").as_uri()  # file:// URLs too
    rows = [{"image": url, "caption": f"picture {n}"} for n, url in enumerate(urls)]
    (folder / "urls.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    spec = {"name": "urls", "path": str(folder / "urls.jsonl"), "image_columns": ["image"]}
    data = load_dataset_spec(spec)
    assert data["image"][0]["image_path"] == urls[0]  # a reference: nothing read yet
    decoded, captions = _collate(data)
    assert captions == ["picture 0", "picture 1", "picture 2"]
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(decoded, images, strict=True))

    rows.append({"image": "s3://pictures/cells/gone.png", "caption": "missing"})
    (folder / "urls.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    data = load_dataset_spec(spec)  # URLs are checked when read, not with a request per row up front
    with pytest.raises(DataError, match=r"urls\.jsonl, row 3 .*column 'image': s3://pictures/cells/gone\.png: no such"):
        _collate(data)
    bad = BadRows("urls")
    skipped = load_dataset_spec({**spec, "on_bad_rows": "skip"}, bad_rows=bad)
    assert skipped["caption"] == ["picture 0", "picture 1", "picture 2"] and dict(bad.counts) == {"missing image": 1}


def test_a_missing_image_is_named_with_its_row_when_the_data_loads(image_folder):
    folder, _ = image_folder
    rows = [{"image": "pics/0.png", "caption": "ok"}, {"image": "pics/gone.png", "caption": "missing"}]
    (folder / "data.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(DataError, match=r"data\.jsonl, row 1 \(data line 2\): column 'image': image file .*gone\.png"):
        load_dataset_spec({"name": "pics", "path": str(folder / "data.jsonl"), "image_columns": ["image"]})


def test_a_corrupt_image_is_named_with_its_row_when_its_batch_is_built(image_folder):
    folder, _ = image_folder
    (folder / "pics" / "1.png").write_bytes(_png(random_images(1)[0])[:40])  # a truncated PNG
    rows = [{"image": f"pics/{n}.png", "caption": "c"} for n in range(3)]
    (folder / "data.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    data = load_dataset_spec({"name": "pics", "path": str(folder / "data.jsonl"), "image_columns": ["image"]})
    for threads in (1, 4):  # decoded on threads, the error still names the row
        with pytest.raises(DataError, match=r"data\.jsonl, row 1 \(data line 2\): column 'image': image '.*1\.png'"):
            decode_rows(list(data), threads)


def test_a_batch_decoded_on_threads_equals_one_decoded_in_order(image_folder):
    folder, images = image_folder
    rows = [{"image": f"pics/{n % 3}.png", "other": f"pics/{(n + 1) % 3}.png", "caption": f"c{n}"} for n in range(12)]
    (folder / "data.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    data = list(
        load_dataset_spec({"name": "p", "path": str(folder / "data.jsonl"), "image_columns": ["image", "other"]})
    )
    threaded, serial = decode_rows(data, 4), decode_rows(data, 1)
    for n, (a, b) in enumerate(zip(threaded, serial, strict=True)):
        assert a["caption"] == b["caption"] == f"c{n}"
        for column, image in (("image", images[n % 3]), ("other", images[(n + 1) % 3])):
            assert np.array_equal(np.asarray(a[column]), np.asarray(image))
            assert np.array_equal(np.asarray(b[column]), np.asarray(image))
    assert decode_rows([{"caption": "text only"}]) == [{"caption": "text only"}]


def test_on_bad_rows_skip_leaves_out_and_counts_missing_corrupt_and_non_images(image_folder):
    folder, images = image_folder
    (folder / "pics" / "1.png").write_bytes(_png(random_images(1)[0])[:40])  # a truncated PNG
    (folder / "notes.png").write_text("a text file named like an image")
    rows = [
        {"image": "pics/0.png", "caption": "zero"},
        {"image": "pics/1.png", "caption": "truncated"},
        {"image": "pics/gone.png", "caption": "missing"},
        {"image": "notes.png", "caption": "not a picture"},
        {"image": None, "caption": "null"},
        {"image": "pics/2.png", "caption": "two"},
    ]
    (folder / "data.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    spec = {"name": "pics", "path": str(folder / "data.jsonl"), "image_columns": ["image"], "on_bad_rows": "skip"}
    bad = BadRows("pics")
    data = load_dataset_spec(spec, bad_rows=bad)
    assert data["caption"] == ["zero", "two"]
    assert dict(bad.counts) == {"undecodable image": 2, "missing image": 1, "not an image": 1}
    assert "data.jsonl, row 1 (data line 2): column 'image'" in bad.examples[0]  # in file order, file rows named
    assert data[1]["image"]["row"].endswith("data.jsonl, row 5 (data line 6)")  # kept rows keep their own place
    decoded, captions = _collate(data)
    assert captions == ["zero", "two"]
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(decoded, images[::2], strict=True))

    _write_shard(folder / "shard.tar", images, corrupt=(1,))
    bad = BadRows("web")
    data = load_dataset_spec({"name": "web", "path": str(folder / "shard.tar"), "on_bad_rows": "skip"}, bad_rows=bad)
    assert data["text"] == ["caption 0", "caption 2"] and dict(bad.counts) == {"undecodable image": 1}


def test_prefixes_apply_to_the_text_columns_only(image_folder):
    folder, _ = image_folder
    (folder / "data.jsonl").write_text(json.dumps({"image": "pics/0.png", "caption": "c"}) + "\n")
    spec = {"name": "pics", "path": str(folder / "data.jsonl"), "image_columns": ["image"], "query_prefix": "query"}
    assert build_training_data([spec]).prompts == {"caption": "query: "}


def test_offline_sets(tmp_path):
    digits = write_digits(tmp_path, test_fraction=0.25)
    rows = {split: [json.loads(line) for line in open(digits / f"{split}.jsonl")] for split in ("train", "test")}
    assert len(rows["train"]) + len(rows["test"]) == 1797 and len(rows["test"]) == 449
    assert not {row["image"] for row in rows["train"]} & {row["image"] for row in rows["test"]}
    assert all(row["caption"] == f"a handwritten digit {row['label']}" for row in rows["test"])
    from sklearn.datasets import load_digits  # the first test image is the scan it says it is

    scans = load_digits()
    first = np.asarray(Image.open(digits / rows["test"][0]["image"]).resize((8, 8), Image.Resampling.BILINEAR))
    match = np.abs(255 - scans.images * (255 / 16) - first).reshape(len(scans.images), -1).mean(axis=1).argmin()
    assert ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"][scans.target[match]] == (
        rows["test"][0]["label"]
    )

    shapes = write_shapes(tmp_path, train_per_combination=1)
    test = [json.loads(line) for line in open(shapes / "test.jsonl")]
    assert len({row["caption"] for row in test}) == len(test) == 64
    for row in test:  # the named colour is in the named half of the image
        colour_name, position = row["caption"].split(" ")[1], " ".join(row["caption"].split(" ")[3:])
        pixels = np.asarray(Image.open(shapes / row["image"])).astype(int)
        half = {"on the left": pixels[:, :16], "on the right": pixels[:, 16:], "at the top": pixels[:16],
                "at the bottom": pixels[16:]}[position]  # fmt: skip
        assert (np.abs(half - np.array(COLOURS[colour_name])).sum(axis=-1) < 30).any(), row
