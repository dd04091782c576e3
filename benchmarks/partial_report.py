"""The figures a benchmark has measured so far, for a caller that may stop it before it prints its whole report.

``gpu_check.py`` gives each part a time limit (the GPU run is one short try): a benchmark that is killed at its limit
prints no report, so ``bench_backbone.py`` and ``bench_losses.py`` also write the report as it grows, one line of
compact JSON on stderr after each section or batch size, and ``gpu_check.py`` keeps the last one of a part that timed
out or failed.
"""

from __future__ import annotations

import json
import sys

__all__ = ["PREFIX", "emit_partial", "last_partial"]

PREFIX = "partial report: "


def emit_partial(report: dict) -> None:
    """Write ``report`` as it stands to stderr, one line."""
    print(PREFIX + json.dumps(report), file=sys.stderr, flush=True)


def last_partial(stderr: str) -> dict | None:
    """The last complete report :func:`emit_partial` wrote in ``stderr``, or None."""
    for line in reversed(stderr.splitlines()):
        if line.startswith(PREFIX):
            try:
                return json.loads(line[len(PREFIX) :])
            except json.JSONDecodeError:  # a line cut off when the process was killed
                continue
    return None
