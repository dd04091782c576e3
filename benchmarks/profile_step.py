"""Where a training step's time goes: ``torch.profiler`` over a few of ``bench_backbone.py``'s training steps.

The step is ``bench_backbone``'s (forward of both columns, in-batch-negatives loss, backward, fused AdamW) on the
shared NLI/STS sentences, for one variant (``flash``: packed; ``stock``: ST's padded SDPA; ``flash_compiled``). Prints
what a throughput figure alone cannot tell: the unprofiled step time against the device's busy time (kernels summed:
far below the step time means the step waits on the host, i.e. launches and Python, not on the GPU), the kernels
launched and host-device synchronizations per step, and the operators that take the most device and host time.

Usage::

    python benchmarks/profile_step.py --config bert --hidden-size 768 --layers 12 --batch-size 1024   # BERT-base
    python benchmarks/profile_step.py --variant stock --batch-size 256
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time

import torch
from bench_backbone import TrainRun, build, load_sentences, synchronize
from random_model import write_random_model
from sentence_transformers.base.modules import Transformer
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from st_contrast.callbacks.flops import peak_flops_per_device
from st_contrast.modules import FlashTransformer

SYNCS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "aten::_local_scalar_dense")
LAUNCHES = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx")


def backbone(variant: str, model: str, max_seq_length: int) -> Transformer:
    common = {"max_seq_length": max_seq_length}
    if variant == "stock":
        return Transformer(model, model_kwargs={"attn_implementation": "sdpa"}, **common)
    return FlashTransformer(model, compile=variant == "flash_compiled", **common)


def device_microseconds(averages) -> float:
    """Summed time of the device's own events (kernels, copies, memsets) in a ``key_averages()`` list, microseconds.

    Only the events of the device type count, as the profiler's table sums its "Self CUDA time total": an operator
    that launched a kernel also carries that kernel's time as its own device time."""
    return sum(
        event.self_device_time_total
        for event in averages
        if event.device_type == DeviceType.CUDA and not getattr(event, "is_user_annotation", False)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model path (default: a random --config model)")
    parser.add_argument("--config", default="bert")
    parser.add_argument("--hidden-size", type=int, default=768)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--variant", choices=("flash", "stock", "flash_compiled"), default="flash")
    parser.add_argument("--batch-size", type=int, default=1024, help="pairs per step")
    parser.add_argument("--max-seq-length", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="profiled steps")
    parser.add_argument("--top", type=int, default=15, help="rows of each operator table")
    args = parser.parse_args()

    scratch = tempfile.TemporaryDirectory(prefix="profile-step-")
    model_path = args.model or write_random_model(
        args.config, scratch.name, hidden_size=args.hidden_size, num_hidden_layers=args.layers, head_dim=args.head_dim
    )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    n_pairs = args.batch_size * (args.warmup + 2 * args.steps)
    sentences = load_sentences(2 * n_pairs)
    batches = [(sentences[i : i + args.batch_size], sentences[n_pairs + i : n_pairs + i + args.batch_size])
               for i in range(0, n_pairs, args.batch_size)]  # fmt: skip
    model = build(backbone(args.variant, model_path, args.max_seq_length), device, dtype)
    peak = peak_flops_per_device(device, "bf16" if dtype == torch.bfloat16 else "fp32")
    run = TrainRun(model, batches, peak)
    for index in range(args.warmup + args.steps):  # warm-up, then steps timed without the profiler
        run.step(index, timed=index >= args.warmup)
    unprofiled = statistics.median(run.times)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    synchronize(device)
    start = time.perf_counter()
    with profile(activities=activities) as profiler:
        for index in range(args.warmup + args.steps, args.warmup + 2 * args.steps):
            run.step(index, timed=False)
    wall = (time.perf_counter() - start) / args.steps
    averages = profiler.key_averages()
    counts = {event.key: event.count for event in averages}
    busy = device_microseconds(averages) / 1e6 / args.steps
    figures = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "variant": args.variant,
        "batch_size": args.batch_size,
        "profiled_step_s": round(wall, 4),
        "unprofiled_step_s": round(unprofiled, 4),
        "device_busy_s_per_step": round(busy, 4),
        # kernels' time over the unprofiled step (the profiler slows the host, not the kernels): well below 1, the
        # step waits on the host
        "device_busy_fraction": round(busy / unprofiled, 3) if device.type == "cuda" else None,
        "kernel_launches_per_step": sum(counts.get(name, 0) for name in LAUNCHES) / args.steps,
        "syncs_per_step": {name: counts[name] / args.steps for name in SYNCS if name in counts},
        "real_tokens_per_step": run.tokens / args.steps,
        "mfu_unprofiled": run.result().get("mfu"),
    }
    print(f"--- top {args.top} operators by device time ---")
    if device.type == "cuda":
        print(averages.table(sort_by="self_cuda_time_total", row_limit=args.top, max_name_column_width=60))
    print(f"--- top {args.top} operators by host time ---")
    print(averages.table(sort_by="self_cpu_time_total", row_limit=args.top, max_name_column_width=60))
    print(json.dumps(figures, indent=2))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
