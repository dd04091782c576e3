"""2-process gloo runs (torchrun) of the InfoNCE losses against one process on the concatenated batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
TIMEOUT_S = 300


def run_workers(script: str, *args: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)])}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    try:
        result = subprocess.run(
            [*command, str(TESTS / script), *args], env=env, capture_output=True, text=True, timeout=TIMEOUT_S
        )
    except subprocess.TimeoutExpired as error:
        raise AssertionError(f"the workers hung:\n{error.stdout}\n{error.stderr}") from error
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]


def test_gathered_info_nce_equals_single_process_and_temperature_stays_synced(
    tiny_model_factory, snli_sentences, tmp_path
):
    columns = [snli_sentences[:8], snli_sentences[100:108], snli_sentences[200:208]]
    (tmp_path / "columns.json").write_text(json.dumps(columns))
    report_path = tmp_path / "report.json"
    run_workers(
        "distributed_losses_worker.py", tiny_model_factory("bert"), str(tmp_path / "columns.json"), str(report_path)
    )
    report = json.loads(report_path.read_text())
    for name in ("InfoNCELoss", "CachedInfoNCELoss", "SigLIPLoss", "GlobalContrastiveLoss", "CLIPLoss", "SimCSELoss"):
        assert report[name]["loss"] < 1e-5, report
        assert report[name]["gradients"] < 1e-5, report
    assert report["GlobalContrastiveLoss"]["state"] < 1e-5, "the moving averages u differ from one process"
    assert report["GloFND"] < 1e-6, "GloFND state differs from the single-process one"
    assert report["trainer"]["temperature_moved"] > 1e-3, "the temperature did not train"
    assert report["trainer"]["rank_difference"] == 0.0, "weights or temperature differ across ranks"
