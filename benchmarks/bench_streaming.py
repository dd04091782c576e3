"""Streaming a corpus from a local S3 server vs reading the same shards from local disk into the Arrow cache, and
whether the stream keeps up with training.

Builds a contrastors corpus (``--rows`` pairs of random-word texts in ``--shards`` gzipped JSON Lines shards with
``counts.json`` and ``offsets.json.gz``), uploads it to a moto S3 server on 127.0.0.1 (``moto_server``, from
``pip install "moto[server]" s3fs``), then measures, each in its own process (so peak memory is its own):

- ``stream``: :func:`st_contrast.data.build_training_data` on ``s3://bench/corpus/shard-{00000..}.jsonl.gz`` and one
  epoch of its batches (``--batch-size`` rows, ``--buffer`` rows shuffled together): rows/s, seconds to the first
  batch, peak resident memory, bytes written to local disk (the ``datasets`` cache and the temp folder);
- ``arrow``: :func:`st_contrast.data.load_contrastors_shards` on the local shards (what the in-memory path does
  before step 1): rows/s, seconds, peak memory, size of the Arrow cache;
- ``train``: training steps of the packed all-MiniLM-L6-v2 (InfoNCELoss, AdamW, ``--threads`` CPU threads) on
  batches of the same pairs: rows/s.

Prints one JSON object with the figures, ``stream_vs_arrow`` (rows/s ratio) and ``stream_vs_training`` (the loader
keeps up with room to spare when it is >= 10).

Usage::

    python benchmarks/bench_streaming.py                      # 1M rows, 16 shards, batch 32
    python benchmarks/bench_streaming.py --rows 20000 --shards 4 --train-steps 2
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
BUCKET = "s3://bench/corpus"


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _resident_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


def _disk_bytes(*folders: Path) -> int:
    return sum(
        path.stat().st_size for folder in folders if folder.exists() for path in folder.rglob("*") if path.is_file()
    )


def _vocabulary() -> list[str]:
    """English words (from the shared SNLI sample, so texts tokenize like text), or made-up ones without it."""
    path = DATA / "nli" / "snli_sample_20k" / "train.tsv.gz"
    if path.is_file():
        with gzip.open(path, "rt", encoding="utf8") as handle:
            return sorted({word for line in handle for word in line.split("\t", 2)[0].split()})
    rng = random.Random(0)
    return [f"{rng.choice('bcdfghklmnprst')}{rng.choice('aeiou')}{rng.choice('nrstlm')}" for _ in range(8000)]


def build_corpus(folder: Path, rows: int, shards: int, seed: int = 0) -> None:
    """Random-word pairs (queries of 6-14 words, documents of 20-40), contrastors layout."""
    from st_contrast.data import index_contrastors_shards

    rng = random.Random(seed)
    vocabulary = _vocabulary()
    folder.mkdir(parents=True, exist_ok=True)
    per_shard = [rows // shards + (index < rows % shards) for index in range(shards)]
    for index, count in enumerate(per_shard):
        lines = []
        for row in range(count):
            query = " ".join(rng.choices(vocabulary, k=rng.randint(6, 14)))
            document = " ".join(rng.choices(vocabulary, k=rng.randint(20, 40)))
            lines.append(json.dumps({"query": f"{query} {index}-{row}", "document": document}))
        with gzip.open(folder / f"shard-{index:05d}.jsonl.gz", "wt", encoding="utf8", compresslevel=6) as handle:
            handle.write("\n".join(lines) + "\n")
    index_contrastors_shards(folder)


def start_s3(work: Path) -> tuple[subprocess.Popen, dict[str, str]]:
    import socket
    import urllib.request

    executable = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = (work / "moto.log").open("wb")
    process = subprocess.Popen([executable, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    for _ in range(300):
        try:
            urllib.request.urlopen(f"{env['AWS_ENDPOINT_URL']}/moto-api/", timeout=1).read()
            return process, env
        except OSError:
            time.sleep(0.2)
    raise SystemExit("moto_server did not start (pip install 'moto[server]' s3fs)")


def upload(corpus: Path, env: dict[str, str]) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(key=env["AWS_ACCESS_KEY_ID"], secret=env["AWS_SECRET_ACCESS_KEY"],
                           endpoint_url=env["AWS_ENDPOINT_URL"], skip_instance_cache=True)  # fmt: skip
    fs.mkdir("bench")
    for path in sorted(corpus.iterdir()):
        fs.put_file(str(path), f"{BUCKET.removeprefix('s3://')}/{path.name}")


# workers: one measurement each, in a fresh process ---------------------------------------------------------------


def worker_stream(args: argparse.Namespace) -> dict:
    import st_contrast.data.streaming  # noqa: F401  (and so torch, which training has loaded: not timed as opening)
    from st_contrast.data import build_training_data

    baseline = _resident_mib()
    start = time.perf_counter()
    pattern = f"{BUCKET}/shard-{{00000..{args.shards - 1:05d}}}.jsonl.gz"
    data = build_training_data(
        {"name": "bench", "path": pattern, "objective": "paired", "shuffle_buffer": args.buffer}, add_sample_index=True
    )
    stream = data.dataset.configure(batch_size=args.batch_size, seed=0)
    opened = time.perf_counter() - start
    rows, first = 0, None
    for batch in stream:
        if first is None:
            first = time.perf_counter() - start
        rows += len(batch)
    seconds = time.perf_counter() - start
    stream.close()
    return {
        "rows": rows,
        "seconds": round(seconds, 2),
        "rows_per_s": round(rows / seconds, 1),
        "seconds_to_open": round(opened, 3),
        "seconds_to_first_batch": round(first, 3),
        "peak_rss_mib": round(peak_mib(), 1),
        "rss_added_mib": round(peak_mib() - baseline, 1),
        "local_disk_bytes": _disk_bytes(Path(os.environ["HF_DATASETS_CACHE"]), Path(tempfile.gettempdir())),
    }


def worker_arrow(args: argparse.Namespace) -> dict:
    from st_contrast.data import load_contrastors_shards

    cache = Path(os.environ["HF_DATASETS_CACHE"])
    baseline = _resident_mib()
    start = time.perf_counter()
    dataset = load_contrastors_shards(args.corpus, cache_dir=str(cache))
    seconds = time.perf_counter() - start
    return {
        "rows": len(dataset),
        "seconds": round(seconds, 2),
        "rows_per_s": round(len(dataset) / seconds, 1),
        "seconds_to_first_batch": round(seconds, 3),  # training cannot start before the cache is complete
        "peak_rss_mib": round(peak_mib(), 1),
        "rss_added_mib": round(peak_mib() - baseline, 1),
        "local_disk_bytes": _disk_bytes(cache, Path(tempfile.gettempdir())),
    }


def worker_train(args: argparse.Namespace) -> dict:
    import torch

    from st_contrast.losses import InfoNCELoss
    from st_contrast.training.builders import build_model

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model({"name_or_path": "minilm", "packed": True})
    model.train()
    loss = InfoNCELoss(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    pairs = []
    with gzip.open(Path(args.corpus) / "shard-00000.jsonl.gz", "rt", encoding="utf8") as handle:
        for line, _ in zip(handle, range(args.batch_size * (args.train_steps + 1)), strict=False):
            record = json.loads(line)
            pairs.append((record["query"], record["document"]))
    batches = [pairs[i : i + args.batch_size] for i in range(0, len(pairs), args.batch_size)]
    times = []
    for step, batch in enumerate(batches[: args.train_steps + 1]):
        start = time.perf_counter()
        features = [model.preprocess([pair[column] for pair in batch]) for column in (0, 1)]
        value = loss(features, torch.empty(0))
        value.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step:  # the first step warms up
            times.append(time.perf_counter() - start)
    seconds = sum(times)
    return {
        "steps": len(times),
        "batch_size": args.batch_size,
        "threads": args.threads,
        "seconds_per_step": round(seconds / len(times), 3),
        "rows_per_s": round(len(times) * args.batch_size / seconds, 1),
    }


WORKERS = {"stream": worker_stream, "arrow": worker_arrow, "train": worker_train}


def run_worker(name: str, args: argparse.Namespace, env: dict[str, str], work: Path) -> dict:
    folder = work / f"worker-{name}"
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "cache").mkdir(parents=True)
    (folder / "tmp").mkdir()
    worker_env = {**os.environ, **env, "HF_DATASETS_CACHE": str(folder / "cache"), "TMPDIR": str(folder / "tmp"),
                  "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads),
                  "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    command = [sys.executable, __file__, "--worker", name, "--corpus", str(work / "corpus"), "--rows", str(args.rows),
               "--shards", str(args.shards), "--batch-size", str(args.batch_size), "--buffer", str(args.buffer),
               "--train-steps", str(args.train_steps), "--threads", str(args.threads)]  # fmt: skip
    return run_json(name, command, worker_env)


def run_json(name: str, command: list[str], env: dict[str, str]) -> dict:
    """Run a worker ``command`` with ``env``; the JSON object on the last line of its output (a failure exits)."""
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode:
        raise SystemExit(f"worker {name} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=32, help="rows per batch (loader and training)")
    parser.add_argument("--buffer", type=int, default=10_000, help="shuffle_buffer of the stream (rows)")
    parser.add_argument("--train-steps", type=int, default=4, help="timed training steps (after one warm-up)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for training")
    parser.add_argument("--work-dir", help="where the corpus and caches go (default: a temporary folder)")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--corpus", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args)))
        return

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench-streaming-"))
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    build_corpus(work / "corpus", args.rows, args.shards)
    corpus_bytes = _disk_bytes(work / "corpus")
    generated = time.perf_counter() - start
    server, env = start_s3(work)
    try:
        upload(work / "corpus", env)
        results = {name: run_worker(name, args, env, work) for name in ("stream", "arrow", "train")}
    finally:
        server.terminate()
        server.wait(timeout=30)
    stream, arrow, train = results["stream"], results["arrow"], results["train"]
    report = {
        "rows": args.rows,
        "shards": args.shards,
        "corpus_gzip_bytes": corpus_bytes,
        "seconds_to_generate": round(generated, 1),
        "batch_size": args.batch_size,
        "shuffle_buffer": args.buffer,
        "cpu_count": os.cpu_count(),
        "stream_s3": stream,
        "arrow_cache_local": arrow,
        "train_packed_minilm": train,
        "stream_vs_arrow": round(stream["rows_per_s"] / arrow["rows_per_s"], 2),
        "stream_vs_training": round(stream["rows_per_s"] / train["rows_per_s"], 1),
        "keeps_up_10x": stream["rows_per_s"] >= 10 * train["rows_per_s"],
    }
    print(json.dumps(report, indent=2))
    if not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
