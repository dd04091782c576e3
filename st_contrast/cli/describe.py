"""``st-contrast describe RUN_DIR``: plots and a text summary of a monitored training run.

Reads ``log.jsonl`` / ``eval.jsonl`` written by :func:`st_contrast.callbacks.enable_monitoring` and writes
PNG plots (loss with a rolling percentile band, learning rate against loss, step-time parts, throughput,
embedding geometry, weight spectrum, other evaluation metrics) plus ``summary.txt``. The plots need
matplotlib (``pip install 'st-contrast[plot]'``); the summary does not.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from st_contrast.callbacks.summary import GEOMETRY_METRICS, TIMERS, RunLogs, load_run, summarize_run

__all__ = ["add_parser", "describe", "plot_run"]

MISSING_MATPLOTLIB = (
    "st-contrast describe needs matplotlib for the plots: pip install 'st-contrast[plot]' (or pip install matplotlib)."
)


def _rolling(values: list[float], window: int) -> tuple[Any, Any, Any]:
    """Trailing rolling 10th percentile, median and 90th percentile."""
    import pandas as pd

    series = pd.Series(values).rolling(window, min_periods=1)
    return series.quantile(0.1).to_numpy(), series.median().to_numpy(), series.quantile(0.9).to_numpy()


def _finish(figure: Any, path: Path, written: list[Path]) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    written.append(path)


def _plot_loss(plt: Any, run: RunLogs, out: Path, window: int | None, written: list[Path]) -> None:
    steps, losses = run.series("loss")
    if not losses:
        return
    window = window or max(5, len(losses) // 20)
    low, median, high = _rolling(losses, window)
    grad_steps, grad_norms = run.series("grad_norm")
    figure, axes = plt.subplots(2 if grad_norms else 1, 1, figsize=(9, 7 if grad_norms else 4), squeeze=False)
    axis = axes[0][0]
    axis.plot(steps, losses, color="0.75", linewidth=0.8, label="loss")
    axis.fill_between(steps, low, high, alpha=0.3, label=f"rolling 10-90th percentile ({window} logs)")
    axis.plot(steps, median, linewidth=1.6, label="rolling median")
    axis.set(xlabel="step", ylabel="training loss", title="Training loss")
    axis.legend(loc="upper right")
    axis.grid(alpha=0.3)
    if grad_norms:
        axis = axes[1][0]
        axis.plot(grad_steps, grad_norms, linewidth=1.0)
        axis.set(xlabel="step", ylabel="gradient norm (before clipping)", title="Gradient norm", yscale="log")
        axis.grid(alpha=0.3)
    _finish(figure, out / "loss.png", written)
    plt.close(figure)


def _plot_lr_loss(plt: Any, run: RunLogs, out: Path, written: list[Path]) -> None:
    pairs = [(r["step"], r["learning_rate"], r["loss"]) for r in run.train if "learning_rate" in r and "loss" in r]
    if not pairs:
        return
    steps, rates, losses = zip(*pairs, strict=True)
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(steps, rates)
    left.set(xlabel="step", ylabel="learning rate", title="Learning-rate schedule")
    left.grid(alpha=0.3)
    points = right.scatter(rates, losses, c=steps, s=10, cmap="viridis")
    right.set(xlabel="learning rate", ylabel="training loss", title="Loss against learning rate")
    right.grid(alpha=0.3)
    figure.colorbar(points, ax=right, label="step")
    _finish(figure, out / "lr_vs_loss.png", written)
    plt.close(figure)


def _plot_step_time(plt: Any, run: RunLogs, out: Path, written: list[Path]) -> None:
    steps, totals = run.series("step_time")
    if not totals:
        return
    parts = {timer: dict(zip(*run.series(timer), strict=True)) for timer in TIMERS}
    stacks = [[parts[timer].get(step, 0.0) for step in steps] for timer in TIMERS]
    other = [max(total - sum(column), 0.0) for total, column in zip(totals, zip(*stacks, strict=True), strict=True)]
    figure, axis = plt.subplots(figsize=(9, 4))
    labels = ["data wait", "forward + backward", "optimizer step", "other"]
    axis.stackplot(steps, *stacks, other, labels=labels, alpha=0.85)
    axis.set(xlabel="step", ylabel="seconds per optimizer step", title="Step-time breakdown")
    axis.legend(loc="upper right")
    axis.grid(alpha=0.3)
    _finish(figure, out / "step_time.png", written)
    plt.close(figure)


def _plot_throughput(plt: Any, run: RunLogs, out: Path, written: list[Path]) -> None:
    panels = [
        (key, label)
        for key, label in (
            ("tokens_per_second", "real tokens / s (all ranks)"),
            ("samples_per_second", "samples / s (all ranks)"),
            ("mfu", "MFU (% of peak)"),
        )
        if run.series(key)[1]
    ]
    if not panels:
        return
    figure, axes = plt.subplots(len(panels), 1, figsize=(9, 2.8 * len(panels)), squeeze=False)
    for axis, (key, label) in zip(axes[:, 0], panels, strict=True):
        steps, values = run.series(key)
        axis.plot(steps, [100 * v for v in values] if key == "mfu" else values)
        axis.set(xlabel="step", ylabel=label)
        axis.grid(alpha=0.3)
    axes[0][0].set_title("Throughput")
    _finish(figure, out / "throughput.png", written)
    plt.close(figure)


def _plot_grid(plt: Any, series: list[tuple[str, list, list]], title: str, path: Path, written: list[Path]) -> None:
    if not series:
        return
    columns = min(3, len(series))
    rows = -(-len(series) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    for axis, (label, steps, values) in zip(axes.flat, series, strict=False):
        axis.plot(steps, values, marker="o", markersize=3)
        axis.set(xlabel="step", ylabel=label, title=label)
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(series) :]:
        axis.set_visible(False)
    figure.suptitle(title)
    _finish(figure, path, written)
    plt.close(figure)


def _plot_spectrum(plt: Any, run: RunLogs, out: Path, written: list[Path]) -> None:
    keys = [key for key in run.keys() if key.startswith("spectrum/")]
    if not keys:
        return
    figure, axis = plt.subplots(figsize=(9, 4.5))
    matrices = [key for key in keys if key not in ("spectrum/mean", "spectrum/max")]
    names = [key.removeprefix("spectrum/") for key in matrices]
    common = os.path.commonprefix(names) if len(names) > 1 else ""
    common = common[: common.rfind(".") + 1]  # cut at a module boundary
    for key, name in list(zip(matrices, names, strict=True))[:20]:
        axis.plot(*run.series(key), linewidth=0.8, alpha=0.6, label=name.removeprefix(common)[-45:])
    for key in ("spectrum/mean", "spectrum/max"):
        if key in keys:
            axis.plot(*run.series(key), linewidth=2.2, label=key.removeprefix("spectrum/"))
    axis.set(xlabel="step", ylabel="sigma_1 / mean(sigma)", title="Weight spectrum (top over mean singular value)")
    axis.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), title=common.rstrip(".") or None)
    axis.grid(alpha=0.3)
    _finish(figure, out / "spectrum.png", written)
    plt.close(figure)


def plot_run(run: RunLogs, out: Path, window: int | None = None) -> list[Path]:
    """Write the PNG plots of ``run`` into ``out``; returns their paths. Needs matplotlib."""
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError(MISSING_MATPLOTLIB) from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    _plot_loss(plt, run, out, window, written)
    _plot_lr_loss(plt, run, out, written)
    _plot_step_time(plt, run, out, written)
    _plot_throughput(plt, run, out, written)
    geometry = run.geometry_keys()
    _plot_grid(
        plt,
        [
            (metric.replace("_", " "), *run.series(geometry[metric], run.eval))
            for metric in GEOMETRY_METRICS
            if metric in geometry
        ],
        "Embedding geometry on the probe set",
        out / "geometry.png",
        written,
    )
    _plot_spectrum(plt, run, out, written)
    skip = set(geometry.values()) | {"step", "epoch", "eval_sequential_score"}
    skip |= {"eval_runtime", "eval_samples_per_second", "eval_steps_per_second"}
    others = [key for key in run.keys(run.eval) if key not in skip and run.series(key, run.eval)[1]][:9]
    series = [(key.removeprefix("eval_"), *run.series(key, run.eval)) for key in others]
    _plot_grid(plt, series, "Evaluation", out / "eval.png", written)
    return written


def describe(run_dir: str | Path, out: str | Path | None = None, window: int | None = None) -> tuple[str, list[Path]]:
    """Print and write (``summary.txt``) the summary of a run directory, then write its plots.

    The summary is written first, so it exists even when matplotlib is missing (ImportError).
    """
    run = load_run(run_dir)
    out = Path(out) if out is not None else run.directory / "plots"
    out.mkdir(parents=True, exist_ok=True)
    text = summarize_run(run)
    (out / "summary.txt").write_text(text + "\n", "utf8")
    print(text)
    return text, plot_run(run, out, window)


def _run(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else Path(args.run_dir) / "plots"
    try:
        _, written = describe(args.run_dir, out, args.window)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ImportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"\nWrote {out / 'summary.txt'} and {len(written)} plots: " + ", ".join(p.name for p in written))
    return 0


def add_parser(subcommands: Any) -> argparse.ArgumentParser:
    """Register ``describe`` on the ``st-contrast`` sub-command parsers."""
    parser = subcommands.add_parser(
        "describe", help="plots and a summary of a monitored run (log.jsonl, eval.jsonl)", description=__doc__
    )
    parser.add_argument("run_dir", help="the run's output directory (where log.jsonl and eval.jsonl are)")
    parser.add_argument("--out", default=None, help="where to write the plots and summary.txt (default RUN_DIR/plots)")
    parser.add_argument("--window", type=int, default=None, help="rolling window in logged steps (default n/20, >=5)")
    parser.set_defaults(func=_run)
    return parser
