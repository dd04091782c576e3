"""Exceptions raised while building or running evaluation tasks, each naming the problem and the fix."""

from __future__ import annotations

from pathlib import Path

__all__ = ["DataFormatError", "HubUnavailableError", "TaskSpecError"]


class DataFormatError(ValueError):
    """A local evaluation file is malformed; the message names the file (and line) and what to change.

    Args:
        path: The offending file.
        problem: What is wrong, and how to fix it.
        line: The 1-based line number in ``path``, when one line is at fault.
    """

    def __init__(self, path: str | Path, problem: str, line: int | None = None) -> None:
        self.path = Path(path)
        self.line = line
        where = f"{self.path}, line {line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {problem}")


class TaskSpecError(ValueError):
    """A task spec (string or dict) names no task that can be built; the message lists the accepted forms."""


class HubUnavailableError(RuntimeError):
    """A named MTEB task could not fetch its dataset from the Hugging Face hub (offline, or unreachable)."""
