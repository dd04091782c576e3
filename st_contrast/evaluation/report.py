"""A plain-text table of evaluation results, optionally next to a baseline (e.g. before training)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["format_results_table"]


def _scaled(score: float | None) -> float | None:
    return None if score is None else 100 * score


def _cell(score: float | None) -> str:
    return "-" if score is None else f"{score:.2f}"


def format_results_table(
    results: Mapping[str, Mapping[str, Any]], baseline: Mapping[str, Mapping[str, Any]] | None = None
) -> str:
    """Render :func:`~st_contrast.evaluation.evaluate_model` results as an aligned text table.

    Scores are shown x100 with two decimals (the MTEB leaderboard convention: 0.8203 -> 82.03). With
    ``baseline`` (results of the same tasks, e.g. before training), ``before`` and ``delta`` columns are added.
    An undefined score (None, e.g. a correlation over constant gold scores) shows as ``-``.

    Example:
        ::

            task               split  metric           score
            stsbenchmark-test  test   cosine_spearman  82.03
    """
    headers = ["task", "split", "metric"] + (["before", "after", "delta"] if baseline is not None else ["score"])
    rows = []
    for name, result in results.items():
        row = [name, ",".join(result.get("splits", [])), result["main_metric"]]
        score = _scaled(result["main_score"])
        if baseline is not None:
            before = _scaled(baseline[name]["main_score"]) if name in baseline else None
            delta = f"{score - before:+.2f}" if score is not None and before is not None else "-"
            row += [_cell(before), _cell(score), delta]
        else:
            row.append(_cell(score))
        rows.append(row)
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)]
    numeric = {index for index, header in enumerate(headers) if header in ("score", "before", "after", "delta")}

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.rjust(width) if index in numeric else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(headers)] + [line(row) for row in rows])
