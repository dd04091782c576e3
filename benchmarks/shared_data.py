"""Where the benchmarks find the shared data (``shared/data``, see its README).

Looked up in this order: ``$ST_CONTRAST_DATA``, ``../shared/data`` beside the repository (the layout of a clone next
to the shared folder), ``./shared/data`` inside it (a machine that received the repository with its ``shared/``).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["find_data"]

ROOT = Path(__file__).resolve().parents[1]


def find_data() -> Path:
    """The shared data folder; raises FileNotFoundError naming the places searched."""
    candidates = [Path(os.environ["ST_CONTRAST_DATA"])] if os.environ.get("ST_CONTRAST_DATA") else []
    candidates += [ROOT.parent / "shared" / "data", ROOT / "shared" / "data"]
    for candidate in candidates:
        if (candidate / "nli").is_dir():
            return candidate
    raise FileNotFoundError(
        f"No shared data (nli/, sts/) in any of {[str(c) for c in candidates]}; set ST_CONTRAST_DATA (for a machine "
        "that has no ../shared, benchmarks/gpu_prepare.sh packs a copy into .gpu_carry/, which gpu_check.sh uses)."
    )
