"""Loading through ``datasets`` without its progress bars and logged errors: a failure becomes one ``DataError``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import datasets

__all__ = ["quiet_datasets"]


@contextmanager
def quiet_datasets() -> Iterator[None]:
    """No progress bars and no logged error from ``datasets`` while a file loads: a failure becomes one DataError."""
    bars = datasets.utils.is_progress_bar_enabled()
    level = datasets.utils.logging.get_verbosity()
    datasets.utils.disable_progress_bars()
    datasets.utils.logging.set_verbosity(datasets.utils.logging.CRITICAL)
    try:
        yield
    finally:
        datasets.utils.logging.set_verbosity(level)
        if bars:
            datasets.utils.enable_progress_bars()
