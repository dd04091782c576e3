"""bench_adapters.py runs end to end (tiny settings) and reports consistent counts and ratios.

Speed and memory figures come from full runs (benchmarks/RESULTS.md); this asserts structure only.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_adapters_small_run():
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "bench_adapters.py"),
        "--batch-size=4",
        "--steps=1",
        "--warmup=1",
        "--max-seq-length=32",
    ]
    report = json.loads(subprocess.run(command, capture_output=True, text=True, check=True, timeout=600).stdout)
    methods = report["methods"]
    assert methods["full"]["trainable_params"] == methods["full"]["total_params"]
    assert (
        0
        < methods["bitfit"]["trainable_params"]
        < methods["lora"]["trainable_params"]
        < methods["full"]["total_params"]
    )
    assert methods["lora"]["total_params"] == methods["full"]["total_params"] + methods["lora"]["trainable_params"]
    for method in ("bitfit", "lora"):
        ratios = report["ratios_vs_full"][method]
        assert ratios["trainable_params"] == pytest.approx(
            methods[method]["trainable_params"] / methods["full"]["trainable_params"], abs=1e-5
        )
        assert ratios["step_time"] > 0
