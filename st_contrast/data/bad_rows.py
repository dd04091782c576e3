"""Bad rows: the error that names one, and the counter that skips them (``on_bad_rows: skip``).

A dataset entry's ``on_bad_rows`` decides what a bad row does: ``raise`` (default) stops with a :class:`BadRowError`
naming the file (or URL) and line, ``skip`` leaves the row out and counts it by reason in a :class:`BadRows`, whose
totals the run reports (``metrics.json``, the run log). A damaged gzip stream cannot be skipped row by row: with
``skip`` the rest of that file is left out and counted, as ``truncated file`` rows when a count (``counts.json``)
says how many rows it lost, else once as ``truncated file (rows unknown)``.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from typing import Any

from st_contrast.data.columns import BadRowError
from st_contrast.data.spec import BAD_ROW_MODES

__all__ = ["BAD_ROW_MODES", "BadRowError", "BadRows"]

logger = logging.getLogger(__name__)

_EXAMPLES = 5


class BadRows:
    """Counts of skipped rows by reason, with the first few messages (file and line) as examples.

    Args:
        dataset: The dataset's name, for the report.

    Example:
        ::

            from st_contrast.data.bad_rows import BadRowError, BadRows

            bad = BadRows("nli")
            bad.add(BadRowError("nli.jsonl, line 3: malformed JSON", "malformed JSON"))
            bad.summary()  # "dataset 'nli': skipped 1 bad row (malformed JSON: 1); first: nli.jsonl, line 3: ..."
    """

    def __init__(self, dataset: str) -> None:
        self.dataset = dataset
        self.counts: Counter[str] = Counter()
        self.examples: list[str] = []

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def add(self, error: BadRowError) -> None:
        """Count ``error`` (a row, or ``error.rows`` rows lost with a damaged file)."""
        self.counts[error.reason] += error.rows
        example = " ".join(str(error).split())
        if len(self.examples) < _EXAMPLES and example not in self.examples:
            self.examples.append(example)

    def merge(self, other: BadRows | dict[str, Any]) -> None:
        """Add another counter (or its :meth:`as_dict`), e.g. another rank's."""
        other = other if isinstance(other, dict) else other.as_dict()
        self.counts.update(other.get("by_reason", {}))
        for example in other.get("examples", []):
            if len(self.examples) < _EXAMPLES and example not in self.examples:
                self.examples.append(example)

    def as_dict(self) -> dict[str, Any]:
        """``{"total", "by_reason", "examples"}``, what ``metrics.json`` records."""
        return {"total": self.total, "by_reason": dict(sorted(self.counts.items())), "examples": list(self.examples)}

    @classmethod
    def from_dict(cls, dataset: str, values: dict[str, Any]) -> BadRows:
        bad = cls(dataset)
        bad.merge(values)
        return bad

    def summary(self) -> str:
        """One line for the run log."""
        reasons = ", ".join(f"{reason}: {count}" for reason, count in sorted(self.counts.items()))
        first = f"; first: {self.examples[0]}" if self.examples else ""
        plural = "" if self.total == 1 else "s"
        return f"dataset {self.dataset!r}: skipped {self.total} bad row{plural} ({reasons}){first}"

    def __repr__(self) -> str:
        return f"BadRows({self.dataset!r}, {json.dumps(dict(self.counts))})"
