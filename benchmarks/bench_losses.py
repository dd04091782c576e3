"""Time and peak memory of a training step with cached (GradCache) vs uncached InfoNCE, against stock ST.

For each batch size, one training step (forward, loss, backward) on NLI (anchor, positive, negative) triplets
from ../shared/data with:

- ``uncached``: ``st_contrast.losses.InfoNCELoss`` (learnable temperature);
- ``cached``: ``st_contrast.losses.CachedInfoNCELoss`` with ``--mini-batch-size``;
- ``stock_cached``: Sentence Transformers' ``CachedMultipleNegativesRankingLoss``, same mini-batches.

Every measurement runs in a fresh subprocess, so the peak memory is its own: on CUDA
``torch.cuda.max_memory_allocated``, on CPU the growth of the process's peak resident set over the step.
Prints one JSON object with, per batch size, the median step seconds, the peak MiB, the loss of the batch
(computed once more after the timed steps, without dropout: the three methods must give the same value, and
``loss_max_abs_difference`` says how far apart they are) and the ratios ``cached / uncached`` (memory, time, and
``throughput``, its inverse) and ``cached / stock_cached`` (time). A method that fails (out of GPU memory, say) is
reported with its error and the others are still measured. Batches above the data's 6965 triplets repeat rows.

The default model is a small random BERT (MiniLM's tokenizer, hidden 128, 2 layers) so that the CPU can reach
batch 512; pass ``--model`` (e.g. the packaged all-MiniLM-L6-v2) and larger ``--batch-sizes`` on a GPU.

Usage::

    python benchmarks/bench_losses.py                                  # CPU: batches 64..512
    python benchmarks/bench_losses.py --model PATH --batch-sizes 64 256 1024 4096 --mini-batch-size 64
    python benchmarks/bench_losses.py --batch-sizes 1024 4096 16384 --mini-batch-size 256 --dtype bf16   # GPU
"""

from __future__ import annotations

import argparse
import csv
import gc
import gzip
import json
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from loss_steps import loss_value, time_backward_steps
from partial_report import emit_partial
from random_model import write_random_model
from shared_data import find_data

METHODS = ("uncached", "cached", "stock_cached")


def load_triplets(limit: int) -> list[list[str]]:
    """The first ``limit`` NLI triplets; beyond the file's 6965 the rows repeat (large GPU batches: the step time and
    memory depend on the lengths, not on the texts being distinct)."""
    with gzip.open(find_data() / "nli" / "derived" / "triplets.tsv.gz", "rt", encoding="utf8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    rows = (rows * (limit // len(rows) + 1))[:limit]
    return [[row[column] for row in rows] for column in ("anchor", "positive", "negative")]


def tiny_bert(directory: str) -> str:
    """A small random BERT (hidden 128, 2 layers, 4 heads) with MiniLM's tokenizer, saved like a hub model."""
    return write_random_model("bert", directory, hidden_size=128, num_hidden_layers=2, head_dim=32)


def build_loss(method: str, model, mini_batch_size: int):
    from sentence_transformers.sentence_transformer.losses import CachedMultipleNegativesRankingLoss

    from st_contrast.losses import CachedInfoNCELoss, InfoNCELoss

    if method == "uncached":
        return InfoNCELoss(model)
    if method == "cached":
        return CachedInfoNCELoss(model, mini_batch_size=mini_batch_size)
    return CachedMultipleNegativesRankingLoss(model, mini_batch_size=mini_batch_size)


def measure(args: argparse.Namespace) -> dict:
    """One method at one batch size, in this (fresh) process."""
    from sentence_transformers import SentenceTransformer

    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    model = SentenceTransformer(args.model, device=args.device, model_kwargs={"dtype": dtype})
    model.max_seq_length = args.max_seq_length
    model.train()
    loss_fn = build_loss(args.method, model, args.mini_batch_size)
    columns = load_triplets(args.batch_size)
    from sentence_transformers.util import batch_to_device

    features = [batch_to_device(model.preprocess(column), device) for column in columns]
    seconds, peak = time_backward_steps(model, loss_fn, features, device, args.steps, args.warmup)
    # The loss value on this batch, without dropout (no optimizer step ran, so the weights are the initial ones):
    # the three methods compute the same InfoNCE (temperature 0.05 = MNRL's scale 20) and must agree.
    return {"seconds": seconds, "peak_mib": peak, "loss": loss_value(model, loss_fn, features)}


def measure_interleaved(args: argparse.Namespace) -> dict:
    """The three methods' step times in one process, one step of each in turn (a machine shared with other jobs slows
    them alike): the fastest and the median step of each."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import batch_to_device

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    model = SentenceTransformer(args.model, device=args.device, model_kwargs={"dtype": dtype})
    model.max_seq_length = args.max_seq_length
    model.train()
    losses = {method: build_loss(method, model, args.mini_batch_size) for method in METHODS}
    features = [batch_to_device(model.preprocess(column), model.device) for column in load_triplets(args.batch_size)]
    times: dict[str, list[float]] = {method: [] for method in METHODS}
    for step in range(args.warmup + args.steps):
        for method, loss_fn in losses.items():
            model.zero_grad(set_to_none=True)
            if model.device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            loss_fn([dict(f) for f in features], None).backward()
            if model.device.type == "cuda":
                torch.cuda.synchronize()
            if step >= args.warmup:
                times[method].append(time.perf_counter() - start)
    best = {method: min(values) for method, values in times.items()}
    return {
        "min_seconds": best,
        "median_seconds": {method: statistics.median(values) for method, values in times.items()},
        "throughput_ratio_cached_vs_uncached": round(best["uncached"] / best["cached"], 3),
        "throughput_ratio_stock_cached_vs_uncached": round(best["uncached"] / best["stock_cached"], 3),
    }


def run_one(args: argparse.Namespace, model: str, method: str, batch_size: int) -> dict:
    if args.in_process:
        one = argparse.Namespace(**{**vars(args), "method": method, "model": model, "batch_size": batch_size})
        try:
            return measure_interleaved(one) if method == "interleaved" else measure(one)
        except torch.OutOfMemoryError as error:  # as a worker's: reported, and the next measurement still runs
            message = f"{type(error).__name__}: {str(error).splitlines()[0]}"
            print(f"{method} at batch {batch_size} failed: {message}", file=sys.stderr, flush=True)
            return {"error": message[-500:]}
        finally:
            gc.collect()  # this measurement's model and activations, before the next one's peak is read
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    command = [
        sys.executable, __file__, "--worker", f"--method={method}", f"--model={model}", f"--device={args.device}",
        f"--batch-sizes={batch_size}", f"--mini-batch-size={args.mini_batch_size}", f"--steps={args.steps}",
        f"--warmup={args.warmup}", f"--max-seq-length={args.max_seq_length}", f"--dtype={args.dtype}",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:  # e.g. the uncached step runs out of GPU memory: report it, measure the rest
        lines = result.stderr.strip().splitlines() or ["no output"]
        print(f"{method} at batch {batch_size} failed: {lines[-1]}", file=sys.stderr, flush=True)
        return {"error": lines[-1][-500:]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def ratios(figures: dict) -> dict:
    """Loss agreement and the cached / uncached / stock ratios of the methods that ran (``throughput``: the inverse of
    the time ratio, the issue's measure: 0.75 is the cost of GradCache's extra forward pass in theory)."""
    ran = [method for method in METHODS if "error" not in figures[method]]
    out: dict = {}
    if len(ran) > 1:
        losses = [figures[method]["loss"] for method in ran]
        out["loss_max_abs_difference"] = max(losses) - min(losses)
    cached = figures["cached"]
    if "error" in cached:
        return out
    if "error" not in figures["uncached"]:
        uncached = figures["uncached"]
        out["memory_ratio_cached_vs_uncached"] = round(cached["peak_mib"] / max(uncached["peak_mib"], 1e-6), 3)
        out["time_ratio_cached_vs_uncached"] = round(cached["seconds"] / uncached["seconds"], 3)
        out["throughput_ratio_cached_vs_uncached"] = round(uncached["seconds"] / cached["seconds"], 3)
    if "error" not in figures["stock_cached"]:
        out["time_ratio_cached_vs_stock_cached"] = round(cached["seconds"] / figures["stock_cached"]["seconds"], 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model path or id (default: a small random BERT)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--mini-batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="weights of the model")
    parser.add_argument(
        "--interleaved", action="store_true", help="also time the three methods in one process, one step of each in "
        "turn (fairer on a machine shared with other jobs); ratios of the fastest steps",
    )  # fmt: skip
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run every measurement in this process (no process start per measurement: on a GPU machine each start "
        "costs seconds of imports); times stand, and on CUDA each peak is its own (max_memory_allocated above what "
        "its step started with), but on CPU the peak resident set is the process's, shared by all",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--method", choices=(*METHODS, "interleaved"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.batch_size = args.batch_sizes[0]
        print(json.dumps(measure_interleaved(args) if args.method == "interleaved" else measure(args)))
        return

    with tempfile.TemporaryDirectory() as directory:
        model = args.model or tiny_bert(directory)
        report = {
            "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(),
            "model": args.model or "random BERT (hidden 128, 2 layers)",
            "mini_batch_size": args.mini_batch_size,
            "dtype": args.dtype,
            "torch": torch.__version__,
            "in_process": args.in_process,
            "batches": {},
        }
        for batch_size in args.batch_sizes:
            figures = {method: run_one(args, model, method, batch_size) for method in METHODS}
            figures.update(ratios(figures))
            if args.interleaved:
                figures["interleaved"] = run_one(args, model, "interleaved", batch_size)
            report["batches"][str(batch_size)] = figures
            emit_partial(report)
    print(json.dumps(report, indent=2))
    failures = unexpected_failures(report)
    if failures:  # the report above keeps what did run; the exit status tells a caller (gpu_check) it is broken
        sys.exit(f"{len(failures)} measurement(s) failed for another reason than memory: {failures[0]}")


def unexpected_failures(report: dict) -> list[str]:
    """The measurements that failed other than by running out of memory (a result: that method does not fit)."""
    return [
        f"{method} at batch {batch}: {figures[method]['error']}"
        for batch, figures in report["batches"].items()
        for method in METHODS
        if "error" in figures[method] and "out of memory" not in figures[method]["error"].lower()
    ]


if __name__ == "__main__":
    main()
