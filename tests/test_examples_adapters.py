"""The adapter examples run end to end in a tiny setting and print both STS-B scores."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCORE = r"STS-B dev Spearman {}: \d+\.\d\d"


@pytest.mark.slow
@pytest.mark.parametrize("script", ["train_bitfit.py", "train_lora.py"])
def test_adapter_example_runs(script, tmp_path):
    command = [
        sys.executable,
        str(ROOT / "examples" / script),
        "--num-triplets=32",
        "--batch-size=8",
        "--max-steps=2",
        f"--output-dir={tmp_path / 'out'}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert re.search(SCORE.format("before"), result.stdout) and re.search(SCORE.format("after"), result.stdout)
    assert (tmp_path / "out" / ("modules.json" if script == "train_bitfit.py" else "merged/modules.json")).is_file()
