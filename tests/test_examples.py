"""The examples run as written (they exit non-zero when their own checks fail), in this process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from in_process import run_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_flash_backbone_example(tmp_path):
    output = run_script(ROOT / "examples" / "flash_backbone.py", "--output-dir", str(tmp_path / "model"))
    assert "stock 82.03, FlashTransformer 82.03" in output
    assert (tmp_path / "model" / "modules.json").is_file()


@pytest.mark.slow
def test_monitored_example(tmp_path):
    script = ROOT / "examples" / "train_monitored.py"
    run_script(script, "--max-steps=4", "--batch-size=8", f"--output-dir={tmp_path}", cwd=ROOT)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == [2, 4]
    counted = log[-1]["samples_seen/pairs"] + log[-1]["samples_seen/triplets"]
    assert log[-1]["samples_seen"] == counted == 4 * 8 and log[-1]["tokens_seen"] > 4 * 8 * 2
    evaluations = [json.loads(line) for line in (tmp_path / "eval.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in evaluations] == [0, 4]
    assert all(0 < entry["eval_stsb-dev_spearman_cosine"] < 1 for entry in evaluations)
    assert all(0 < entry["eval_geometry_effective_rank"] <= 384 for entry in evaluations)
    assert (tmp_path / "plots" / "loss.png").stat().st_size > 10_000
