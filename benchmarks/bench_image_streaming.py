"""Image-text tar shards from a local S3 server: streamed row by row vs indexed up front, and a stock reader.

Writes ``--rows`` captioned JPEG images (``--image-size`` pixels, smooth random content) into ``--shards`` webdataset
tar shards, uploads them to a moto S3 server on 127.0.0.1 (``pip install "moto[server]" s3fs``), then measures, each
in its own process (peak memory its own), one epoch of ``--batch-size`` batches with every image decoded to RGB, as
the trainer's collator does (``decode_rows``: a few threads, ``--decode-threads``):

- ``stream``: :func:`st_contrast.data.build_training_data` on ``s3://bench-images/web/shard-{0000..}.tar`` (the default
  for tar shards at a URL): each rank reads its shards front to back, images with their samples, shuffled in windows
  of ``--buffer`` rows;
- ``indexed``: the same URL with ``stream: false``: every shard's headers read before the first step, then one ranged
  read per image, in a shuffled order;
- ``hf_local``: Hugging Face ``datasets``' ``webdataset`` builder, ``streaming=True`` with a ``--buffer`` shuffle
  (images decoded one after the other in the loop, as its rows come), on
  the shards on local disk (what a stock Sentence Transformers user reaches for; it gets local files here, an easier
  task, because its ``s3://`` streaming failed with the s3fs of the machine this was written on).

The shards come with open_clip's ``sizes.json`` (as img2dataset-made corpora do), so the stream reads no header before
its first batch; ``--no-sizes-json`` leaves it out: the stream then reads every shard's headers once to count them.

Each worker imports torch before its clock starts, as the process of a training run has (both readers load it: ours for
its ``IterableDataset``, ``datasets``' webdataset builder on its own), so the figures time reading, not imports.

Prints one JSON object: per reader rows/s, seconds to the first decoded batch, peak resident MiB, and the ratios
``stream_vs_indexed`` / ``stream_vs_hf_local`` (rows/s) and ``first_batch_indexed_vs_stream`` (seconds); ``decode``
times ``decode_rows`` alone on one batch of the shards' images in memory, one thread vs its default
(``decode_threads_vs_one``).

Usage::

    python benchmarks/bench_image_streaming.py                          # 10,000 images of 128 px, 10 shards
    python benchmarks/bench_image_streaming.py --rows 200 --shards 4 --batch-size 16 --buffer 50
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from bench_streaming import peak_mib, run_json, start_s3

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "s3://bench-images/web"


def build_shards(folder: Path, rows: int, shards: int, size: int, sizes_json: bool, seed: int = 0) -> None:
    """JPEG images of upsampled random colour grids (they compress like photos, unlike noise) with captions, and
    open_clip's ``sizes.json`` (samples per shard) unless ``sizes_json`` is false."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    per_shard = [rows // shards + (index < rows % shards) for index in range(shards)]
    number = 0
    for index, count in enumerate(per_shard):
        with tarfile.open(folder / f"shard-{index:04d}.tar", "w") as archive:
            for _ in range(count):
                grid = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
                image = Image.fromarray(grid).resize((size, size), Image.BILINEAR)
                buffer = io.BytesIO()
                image.save(buffer, format="JPEG", quality=90)
                caption = f"picture {number} with colours {' '.join(str(value) for value in grid[0, :3, 0])}"
                for suffix, payload in ((".jpg", buffer.getvalue()), (".txt", caption.encode())):
                    member = tarfile.TarInfo(f"{number:08d}{suffix}")
                    member.size = len(payload)
                    archive.addfile(member, io.BytesIO(payload))
                number += 1
    if sizes_json:
        sizes = {f"shard-{index:04d}.tar": count for index, count in enumerate(per_shard)}
        (folder / "sizes.json").write_text(json.dumps(sizes), encoding="utf8")


def upload(folder: Path, env: dict[str, str]) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(key=env["AWS_ACCESS_KEY_ID"], secret=env["AWS_SECRET_ACCESS_KEY"],
                           endpoint_url=env["AWS_ENDPOINT_URL"], skip_instance_cache=True)  # fmt: skip
    fs.mkdir(BUCKET.removeprefix("s3://").split("/")[0])
    for path in sorted(folder.iterdir()):
        fs.put_file(str(path), f"{BUCKET.removeprefix('s3://')}/{path.name}")


def _epoch(batches, decode) -> dict:
    """Rows, seconds, seconds to the first decoded batch of an iterable of row batches; ``decode(batch)`` returns the
    batch's RGB images."""
    start = time.perf_counter()
    rows, first = 0, None
    for batch in batches:
        for image in decode(batch):
            image.close()
        rows += len(batch)
        if first is None:
            first = time.perf_counter() - start
    return {"rows": rows, "seconds": time.perf_counter() - start, "first": first}


# workers: one measurement each, in a fresh process ---------------------------------------------------------------


def worker_stream(args: argparse.Namespace) -> dict:
    from st_contrast.data import build_training_data
    from st_contrast.data.image_decoding import decode_rows

    start = time.perf_counter()
    pattern = f"{BUCKET}/shard-{{0000..{args.shards - 1:04d}}}.tar"
    entry = {"name": "web", "path": pattern, "columns": ["image", "text"], "shuffle_buffer": args.buffer}
    stream = build_training_data(entry).dataset.configure(batch_size=args.batch_size, seed=0)
    opened = time.perf_counter() - start
    epoch = _epoch(stream, lambda batch: [row["image"] for row in decode_rows(batch, args.decode_threads or None)])
    stream.close()
    return _figures(epoch, opened)


def worker_indexed(args: argparse.Namespace) -> dict:
    import numpy as np

    from st_contrast.data import load_dataset_spec
    from st_contrast.data.image_decoding import decode_rows

    start = time.perf_counter()
    pattern = f"{BUCKET}/shard-{{0000..{args.shards - 1:04d}}}.tar"
    dataset = load_dataset_spec({"name": "web", "path": pattern, "columns": ["image", "text"], "stream": False})
    opened = time.perf_counter() - start
    order = np.random.default_rng(0).permutation(len(dataset))
    whole = len(order) // args.batch_size * args.batch_size
    batches = (dataset[order[i : i + args.batch_size]] for i in range(0, whole, args.batch_size))
    rows = (
        [dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True)] for batch in batches
    )
    epoch = _epoch(rows, lambda batch: [row["image"] for row in decode_rows(batch, args.decode_threads or None)])
    return _figures(epoch, opened)


def worker_hf_local(args: argparse.Namespace) -> dict:
    import datasets

    start = time.perf_counter()
    files = sorted(str(path) for path in Path(args.shards_dir).glob("*.tar"))  # sizes.json is not a shard
    stream = datasets.load_dataset("webdataset", data_files={"train": files}, split="train", streaming=True)
    stream = stream.shuffle(seed=0, buffer_size=args.buffer)
    opened = time.perf_counter() - start

    def batches():
        batch = []
        for row in stream:
            batch.append(row)
            if len(batch) == args.batch_size:
                yield batch
                batch = []

    epoch = _epoch(batches(), lambda batch: [row["jpg"].convert("RGB") for row in batch])
    return _figures(epoch, opened)


def _figures(epoch: dict, opened: float) -> dict:
    seconds = opened + epoch["seconds"]
    return {
        "rows": epoch["rows"],
        "seconds": round(seconds, 2),
        "rows_per_s": round(epoch["rows"] / seconds, 1),
        "seconds_before_iterating": round(opened, 3),
        "seconds_to_first_batch": round(opened + epoch["first"], 3),
        "peak_rss_mib": round(peak_mib(), 1),
    }


def worker_decode(args: argparse.Namespace) -> dict:
    """``decode_rows`` alone on the first shard's images (in memory): images/s on one thread and on its default."""
    from st_contrast.data.image_decoding import _default_threads, decode_rows

    with tarfile.open(Path(args.shards_dir) / "shard-0000.tar") as archive:
        payloads = [archive.extractfile(m).read() for m in archive.getmembers() if m.name.endswith(".jpg")]
    rows = [{"image": {"image_path": None, "image_bytes": data, "offset": None, "size": None, "row": str(number)}}
            for number, data in enumerate(payloads[: args.batch_size])]  # fmt: skip
    figures = {}
    for name, threads in (("one_thread", 1), ("default_threads", None)):
        decode_rows(rows, threads)  # warm-up
        start, decoded = time.perf_counter(), 0
        while time.perf_counter() - start < 2:
            decoded += len(decode_rows(rows, threads))
        figures[name] = round(decoded / (time.perf_counter() - start), 1)
    return {"images_per_s": figures, "threads": _default_threads()}


WORKERS = {"stream": worker_stream, "indexed": worker_indexed, "hf_local": worker_hf_local, "decode": worker_decode}


def run_worker(name: str, args: argparse.Namespace, env: dict[str, str], work: Path) -> dict:
    folder = work / f"worker-{name}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    worker_env = {**os.environ, **env, "HF_DATASETS_CACHE": str(folder), "HF_HUB_OFFLINE": "1", "PYTHONPATH": path}
    command = [sys.executable, __file__, "--worker", name, "--shards-dir", str(work / "shards"), "--rows",
               str(args.rows), "--shards", str(args.shards), "--batch-size", str(args.batch_size), "--buffer",
               str(args.buffer), "--decode-threads", str(args.decode_threads)]  # fmt: skip
    return run_json(name, command, worker_env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--shards", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--buffer", type=int, default=2000, help="rows shuffled together (stream and hf_local)")
    parser.add_argument(
        "--decode-threads",
        type=int,
        default=0,
        help="threads decoding a batch (ImageTextDataCollator's); 0: its default",
    )
    parser.add_argument(
        "--no-sizes-json", action="store_true", help="no sizes.json: the stream counts samples by reading the headers"
    )
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--shards-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        import torch  # noqa: F401  (a training process has loaded it: no reader's clock counts its import)

        print(json.dumps(WORKERS[args.worker](args)))
        return

    work = Path(tempfile.mkdtemp(prefix="bench-image-streaming-"))
    try:
        build_shards(work / "shards", args.rows, args.shards, args.image_size, not args.no_sizes_json)
        shard_bytes = sum(path.stat().st_size for path in (work / "shards").iterdir())
        server, env = start_s3(work)
        try:
            upload(work / "shards", env)
            results = {name: run_worker(name, args, env, work) for name in WORKERS}
        finally:
            server.terminate()
            server.wait(timeout=30)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    stream, indexed, stock = results["stream"], results["indexed"], results["hf_local"]
    report = {
        "rows": args.rows,
        "shards": args.shards,
        "image_size": args.image_size,
        "shard_mib": round(shard_bytes / 2**20, 1),
        "sizes_json": not args.no_sizes_json,
        "batch_size": args.batch_size,
        "buffer": args.buffer,
        "decode_threads": args.decode_threads or "default",
        "cpu_count": os.cpu_count(),
        **results,
        "stream_vs_indexed": round(stream["rows_per_s"] / indexed["rows_per_s"], 2),
        "stream_vs_hf_local": round(stream["rows_per_s"] / stock["rows_per_s"], 2),
        "first_batch_indexed_vs_stream": round(indexed["seconds_to_first_batch"] / stream["seconds_to_first_batch"], 2),
        "decode_threads_vs_one": round(
            results["decode"]["images_per_s"]["default_threads"] / results["decode"]["images_per_s"]["one_thread"], 2
        ),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
