"""Timing and peak memory of a loss's forward + backward, shared by the loss benchmarks.

GPU: ``torch.cuda.max_memory_allocated`` above what was allocated before the step. CPU: the process's peak resident
memory (``ru_maxrss``) above its resident memory before the step (so only a step that raises the peak counts).
"""

from __future__ import annotations

import resource
import statistics
import time

import torch

__all__ = ["current_rss_mib", "loss_value", "time_backward_steps"]


def current_rss_mib() -> float:
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


def time_backward_steps(model, loss_fn, features: list[dict], device: torch.device, steps: int, warmup: int):
    """``(median seconds, peak MiB)`` of ``loss_fn(features).backward()`` over ``steps`` after ``warmup`` steps."""
    times, peak = [], 0.0
    for step in range(warmup + steps):
        model.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            base = current_rss_mib()
        start = time.perf_counter()
        loss_fn([dict(f) for f in features], None).backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
            peak = max(peak, (torch.cuda.max_memory_allocated() - base) / 2**20)
        else:
            peak = max(peak, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base)
        if step >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times), round(peak, 1)


def loss_value(model, loss_fn, features: list[dict]) -> float:
    """The loss on ``features`` without dropout (``model`` in eval mode, no gradients)."""
    model.eval()
    with torch.no_grad():
        return loss_fn([dict(f) for f in features], None).item()
