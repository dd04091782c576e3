"""The examples run as written (they exit non-zero when their own checks fail)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_flash_backbone_example(tmp_path):
    script = ROOT / "examples" / "flash_backbone.py"
    command = [sys.executable, str(script), "--output-dir", str(tmp_path / "model")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "stock 82.03, FlashTransformer 82.03" in result.stdout
    assert (tmp_path / "model" / "modules.json").is_file()
