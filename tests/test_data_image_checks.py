"""``on_bad_rows: skip`` on image columns: every image decoded once, the result kept in the ``datasets`` cache, reused
by the next load of the same images and discarded when an image changes."""

from __future__ import annotations

import io
import json
import os
import tarfile

import datasets
import pytest
from image_text_helpers import random_images

import st_contrast.data.images as images_module
from st_contrast.data import load_dataset_spec
from st_contrast.data.bad_rows import BadRows


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def decodes(monkeypatch):
    """The references decoded so far (every image the check opens goes through ``images._decode``)."""
    seen = []
    decode = images_module._decode

    def counting(reference, column):
        seen.append(reference.get("image_path") or "bytes")
        return decode(reference, column)

    monkeypatch.setattr(images_module, "_decode", counting)
    return seen


def _load(spec, cache_dir):
    bad = BadRows(spec["name"])
    data = load_dataset_spec({**spec, "on_bad_rows": "skip"}, cache_dir=str(cache_dir), bad_rows=bad)
    return data, bad


def test_a_second_load_reuses_the_check_and_a_changed_image_is_checked_again(tmp_path, decodes):
    pictures = random_images(3)
    (tmp_path / "pics").mkdir()
    for number, image in enumerate(pictures):
        image.save(tmp_path / "pics" / f"{number}.png")
    (tmp_path / "pics" / "1.png").write_bytes(_png(pictures[1])[:40])  # truncated
    rows = [{"image": f"pics/{name}.png", "caption": name} for name in ("0", "1", "gone", "2")]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    spec = {"name": "pics", "path": str(tmp_path / "data.jsonl"), "image_columns": ["image"]}
    cache = tmp_path / "cache"

    data, bad = _load(spec, cache)
    assert data["caption"] == ["0", "2"] and dict(bad.counts) == {"undecodable image": 1, "missing image": 1}
    assert len(decodes) == 3  # the three files that exist
    kept = list((cache / "st_contrast_image_checks").iterdir())
    assert len(kept) == 1

    decodes.clear()
    again, bad_again = _load(spec, cache)
    assert decodes == []  # nothing decoded: the kept result
    assert again["caption"] == data["caption"] and again["image"] == data["image"]
    assert bad_again.as_dict() == bad.as_dict()  # the same counts and the same messages, file rows named

    good = (tmp_path / "pics" / "2.png").read_bytes()  # a good image goes bad, its size unchanged: the time tells
    stat = os.stat(tmp_path / "pics" / "2.png")
    (tmp_path / "pics" / "2.png").write_bytes(good[:40] + bytes(len(good) - 40))
    os.utime(tmp_path / "pics" / "2.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # coarse clocks
    data, bad = _load(spec, cache)
    assert len(decodes) == 3  # checked again
    assert data["caption"] == ["0"] and dict(bad.counts) == {"undecodable image": 2, "missing image": 1}

    pictures[0].save(tmp_path / "pics" / "gone.png")  # the missing image appears
    decodes.clear()
    data, bad = _load(spec, cache)
    assert len(decodes) == 4
    assert data["caption"] == ["0", "gone"] and dict(bad.counts) == {"undecodable image": 2}


def test_datasets_image_cells_are_checked_without_datasets_decoding_them(tmp_path, decodes):
    """A corrupt ``datasets.Image`` cell is a bad row, not an error out of ``datasets``; encoded bytes are identified
    by their digest, so the second load decodes nothing."""
    pictures = random_images(3)
    cells = [{"bytes": _png(image), "path": None} for image in pictures]
    cells[1] = {"bytes": cells[1]["bytes"][:40], "path": None}
    features = datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string")})
    datasets.Dataset.from_dict({"image": cells, "caption": ["a", "b", "c"]}, features=features).save_to_disk(
        str(tmp_path / "saved")
    )
    spec = {"name": "saved", "path": str(tmp_path / "saved"), "image_columns": ["image"]}

    data, bad = _load(spec, tmp_path / "cache")
    assert data["caption"] == ["a", "c"] and dict(bad.counts) == {"undecodable image": 1}
    assert decodes == ["bytes"] * 3
    decodes.clear()
    again, bad_again = _load(spec, tmp_path / "cache")
    assert decodes == [] and again["caption"] == ["a", "c"] and bad_again.as_dict() == bad.as_dict()


def _write_pictures(folder, corrupt: bool = False) -> None:
    """``0.png`` and ``1.png``; with ``corrupt`` the second one's data is zeroed, its size unchanged."""
    folder.mkdir(exist_ok=True)
    for number, image in enumerate(random_images(2)):
        png = _png(image)
        (folder / f"{number}.png").write_bytes(png[:40] + bytes(len(png) - 40) if corrupt and number == 1 else png)


def _url_rows(tmp_path, urls: list[str]) -> dict:
    (tmp_path / "urls.jsonl").write_text("".join(json.dumps({"image": url, "caption": str(n)}) + "\n"
                                                 for n, url in enumerate(urls)))  # fmt: skip
    return {"name": "urls", "path": str(tmp_path / "urls.jsonl"), "image_columns": ["image"]}


def test_images_at_urls_are_identified_by_their_folders_listing(tmp_path, decodes):
    """file:// objects: one listing of their folder tells each one's size and modification time; an image rewritten
    at the same size, or one that appears, is checked again."""
    _write_pictures(tmp_path / "pics")
    urls = [(tmp_path / "pics" / f"{n}.png").as_uri() for n in range(3)]  # 2.png is missing
    spec = _url_rows(tmp_path, urls)
    for _ in range(2):
        data, bad = _load(spec, tmp_path / "cache")
        assert data["caption"] == ["0", "1"] and dict(bad.counts) == {"missing image": 1}
    assert len(decodes) == 3  # the second load opened nothing
    _write_pictures(tmp_path / "pics", corrupt=True)
    os.utime(tmp_path / "pics" / "1.png", ns=(1, 1))  # a new stamp even on a coarse-clocked filesystem
    data, bad = _load(spec, tmp_path / "cache")
    assert data["caption"] == ["0"] and dict(bad.counts) == {"missing image": 1, "undecodable image": 1}
    assert len(decodes) == 6
    random_images(1, seed=5)[0].save(tmp_path / "pics" / "2.png")
    data, bad = _load(spec, tmp_path / "cache")
    assert data["caption"] == ["0", "2"] and dict(bad.counts) == {"undecodable image": 1} and len(decodes) == 9


def test_image_objects_on_s3_are_identified_by_their_listing(tmp_path, s3_server, decodes):
    """On a real S3 server (moto): one listing per folder, not a request per image; an object uploaded again
    (another ETag, same size) is checked again."""
    _write_pictures(tmp_path / "pics")
    s3_server.upload(tmp_path / "pics", "s3://checks/pics")
    spec = _url_rows(tmp_path, [f"s3://checks/pics/{n}.png" for n in range(2)])
    for _ in range(2):
        data, bad = _load(spec, tmp_path / "cache")
        assert data["caption"] == ["0", "1"] and bad.total == 0
    assert len(decodes) == 2
    _write_pictures(tmp_path / "pics", corrupt=True)
    s3_server.upload(tmp_path / "pics", "s3://checks/pics")
    data, bad = _load(spec, tmp_path / "cache")
    assert data["caption"] == ["0"] and dict(bad.counts) == {"undecodable image": 1} and len(decodes) == 4


def test_images_whose_folder_cannot_be_listed_are_checked_on_every_load(tmp_path, decodes, monkeypatch):
    """A listing without version stamps (sizes only, as HTTP servers give) cannot tell a same-size rewrite."""
    from fsspec.implementations.local import LocalFileSystem

    listed = LocalFileSystem.ls

    def sizes_only(self, path, detail=True, **kwargs):
        return [{"name": entry["name"], "size": entry["size"], "type": entry["type"]} for entry in listed(self, path)]

    monkeypatch.setattr(LocalFileSystem, "ls", sizes_only)
    _write_pictures(tmp_path / "pics")
    spec = _url_rows(tmp_path, [(tmp_path / "pics" / f"{n}.png").as_uri() for n in range(2)])
    for _ in range(2):
        assert _load(spec, tmp_path / "cache")[0]["caption"] == ["0", "1"]
    assert len(decodes) == 4 and not (tmp_path / "cache" / "st_contrast_image_checks").exists()


def _write_shard(path, corrupt: bool) -> None:
    """Two samples; with ``corrupt`` the second image's data is zeroed, its size (and the shard's) unchanged."""
    with tarfile.open(path, "w") as archive:
        for number, image in enumerate(random_images(2)):
            png = _png(image)
            png = png[:40] + bytes(len(png) - 40) if corrupt and number == 1 else png
            for name, payload in ((f"{number:04d}.png", png), (f"{number:04d}.txt", f"caption {number}".encode())):
                member = tarfile.TarInfo(name)
                member.size = len(payload)
                archive.addfile(member, io.BytesIO(payload))


def test_a_tar_shard_member_that_changes_is_checked_again(tmp_path, decodes):
    _write_shard(tmp_path / "shard.tar", corrupt=False)
    spec = {"name": "web", "path": str(tmp_path / "shard.tar")}
    assert _load(spec, tmp_path / "cache")[0]["text"] == ["caption 0", "caption 1"] and len(decodes) == 2
    assert _load(spec, tmp_path / "cache")[0]["text"] == ["caption 0", "caption 1"] and len(decodes) == 2
    _write_shard(tmp_path / "shard.tar", corrupt=True)
    data, bad = _load(spec, tmp_path / "cache")
    assert data["text"] == ["caption 0"] and dict(bad.counts) == {"undecodable image": 1} and len(decodes) == 4


def test_tar_shards_at_a_url_are_identified_by_their_version(tmp_path, s3_server, decodes):
    """Indexed shards on S3 (``stream: false``): one ranged read per image to check them, so the kept check matters
    most; a shard uploaded again (another ETag) is checked again."""
    (tmp_path / "shards").mkdir()
    _write_shard(tmp_path / "shards" / "shard-0000.tar", corrupt=False)
    s3_server.upload(tmp_path / "shards", "s3://checks/web")
    spec = {"name": "web", "path": "s3://checks/web/shard-0000.tar", "stream": False}
    for _ in range(2):
        data, bad = _load(spec, tmp_path / "cache")
        assert data["text"] == ["caption 0", "caption 1"] and bad.total == 0
    assert len(decodes) == 2
    _write_shard(tmp_path / "shards" / "shard-0000.tar", corrupt=True)
    s3_server.upload(tmp_path / "shards", "s3://checks/web")
    data, bad = _load(spec, tmp_path / "cache")
    assert data["text"] == ["caption 0"] and dict(bad.counts) == {"undecodable image": 1} and len(decodes) == 4
