"""Read a monitored run directory back and summarise it in a few lines of text."""

from __future__ import annotations

import json
import logging
import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["GEOMETRY_METRICS", "RunLogs", "load_run", "read_jsonl", "summarize_run"]

TRAIN_LOG = "log.jsonl"
EVAL_LOG = "eval.jsonl"
SUMMARY = "summary.json"
RUN_INFO = "run_info.json"

GEOMETRY_METRICS = (
    "anisotropy",
    "uniformity",
    "alignment",
    "effective_rank",
    "top_singular_share",
    "positive_negative_gap",
)
TIMERS = ("data_time", "fwd_bwd_time", "optimizer_time")


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a JSON-lines file; a truncated last line (a crash mid-write) is skipped."""
    records = []
    path = Path(path)
    if not path.is_file():
        return records
    with path.open(encoding="utf8") as handle:
        for line in handle:
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                logger.warning("Skipping a malformed line in %s: %.80s", path, line)
    return records


@dataclass
class RunLogs:
    """The records of a run directory written by :class:`~st_contrast.callbacks.JsonlLogCallback`."""

    directory: Path
    train: list[dict[str, Any]] = field(default_factory=list)
    eval: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def series(self, key: str, records: list[dict[str, Any]] | None = None) -> tuple[list[int], list[float]]:
        """(steps, values) of ``key`` over the training records (or ``records``), skipping missing values."""
        steps, values = [], []
        for record in self.train if records is None else records:
            value = record.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                steps.append(record.get("step", 0))
                values.append(float(value))
        return steps, values

    def keys(self, records: list[dict[str, Any]] | None = None) -> list[str]:
        seen: dict[str, None] = {}
        for record in self.train if records is None else records:
            seen.update(dict.fromkeys(record))
        return list(seen)

    def geometry_keys(self) -> dict[str, str]:
        """metric name -> eval key (``eval_<probe name>_<metric>``) of the geometry evaluator."""
        found = {}
        for key in self.keys(self.eval):
            for metric in GEOMETRY_METRICS:
                if key.startswith("eval_") and key.endswith("_" + metric) and metric not in found:
                    found[metric] = key
        return found


def load_run(directory: str | Path) -> RunLogs:
    """Load ``log.jsonl``, ``eval.jsonl``, ``summary.json`` and ``run_info.json`` of a run directory."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"Run directory {str(directory)!r} does not exist.")
    if not (directory / TRAIN_LOG).is_file() and not (directory / EVAL_LOG).is_file():
        raise FileNotFoundError(
            f"No {TRAIN_LOG} or {EVAL_LOG} in {str(directory)!r}. Those are written by a trainer with "
            "st_contrast.callbacks.enable_monitoring(trainer) (or MonitoredTrainer) into its output_dir."
        )
    run = RunLogs(directory, read_jsonl(directory / TRAIN_LOG), read_jsonl(directory / EVAL_LOG))
    for name, target in ((SUMMARY, "summary"), (RUN_INFO, "info")):
        if (directory / name).is_file():
            setattr(run, target, json.loads((directory / name).read_text("utf8")))
    return run


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def summarize_run(run: RunLogs) -> str:
    """A short plain-text report: loss, throughput, step-time shares, tokens, geometry and spectrum trends."""
    lines = [f"Run: {run.directory}"]
    steps, losses = run.series("loss")
    if losses:
        best = min(range(len(losses)), key=losses.__getitem__)
        tail = losses[-max(1, len(losses) // 10) :]
        lines.append(
            f"Training: {len(losses)} logged steps up to step {steps[-1]}"
            + (f", epoch {_fmt(run.train[-1]['epoch'])}" if run.train[-1].get("epoch") is not None else "")
            + (f", {_fmt(run.summary['train_runtime'])} s" if "train_runtime" in run.summary else "")
        )
        lines.append(
            f"Loss: first {_fmt(losses[0])}, last {_fmt(losses[-1])}, min {_fmt(losses[best])} at step {steps[best]}, "
            f"median of the last 10% {_fmt(statistics.median(tail))}"
        )
        duplicates = len(steps) - len(set(steps))
        if duplicates:
            lines.append(f"WARNING: {duplicates} duplicated logging steps in {TRAIN_LOG}")
    for key, label in (("tokens_per_second", "tokens/s"), ("samples_per_second", "samples/s"), ("mfu", "MFU")):
        _, values = run.series(key)
        if values:
            lines.append(
                f"{label}: median {_fmt(statistics.median(values))} (min {_fmt(min(values))}, max {_fmt(max(values))})"
            )
    _, step_times = run.series("step_time")
    if step_times:
        shares = []
        for timer in TIMERS:
            _, values = run.series(timer)
            if values:
                shares.append(f"{timer.removesuffix('_time')} {100 * sum(values) / sum(step_times):.1f}%")
        lines.append(f"Step time: median {_fmt(statistics.median(step_times))} s; " + ", ".join(shares))
    if run.train and "tokens_seen" in run.train[-1]:
        last = run.train[-1]
        per_dataset = [f"{key.split('/', 1)[1]} {last[key]:,}" for key in last if key.startswith("tokens_seen/")]
        lines.append(
            f"Seen: {last['tokens_seen']:,} tokens, {last.get('samples_seen', 0):,} samples"
            + (f" (tokens per dataset: {', '.join(per_dataset)})" if per_dataset else "")
        )
    geometry = run.geometry_keys()
    for metric, key in geometry.items():
        steps, values = run.series(key, run.eval)
        if values:
            lines.append(
                f"Geometry {metric}: {_fmt(values[0])} (step {steps[0]}) -> {_fmt(values[-1])} (step {steps[-1]})"
            )
    lines.extend(_collapse_warnings(run, geometry))
    for key in ("spectrum/mean", "spectrum/max"):
        steps, values = run.series(key)
        if values:
            lines.append(
                f"Weight spectrum {key.split('/')[1]} sigma_1/mean(sigma): {_fmt(values[0])} -> {_fmt(values[-1])}"
            )
    return "\n".join(lines)


def _collapse_warnings(run: RunLogs, geometry: dict[str, str]) -> list[str]:
    warnings = []
    last = {metric: run.series(key, run.eval)[1] for metric, key in geometry.items()}
    if last.get("anisotropy") and last["anisotropy"][-1] > 0.9:
        warnings.append("WARNING: mean pairwise cosine above 0.9: the embeddings may be collapsing.")
    ranks = last.get("effective_rank")
    if ranks and len(ranks) > 1 and ranks[-1] < 0.5 * max(ranks):
        warnings.append("WARNING: effective rank fell below half its peak: dimensional collapse?")
    gap = last.get("positive_negative_gap")
    if gap and gap[-1] <= 0:
        warnings.append("WARNING: positives are no closer than negatives on the probe set.")
    return warnings
