"""The training examples run end to end in a tiny setting and print their before / after scores."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 600


def run_example(script: str, *args: str, launcher: tuple[str, ...] = ()) -> str:
    command = [sys.executable, *launcher, str(ROOT / "examples" / script), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout


def scores(output: str, label: str) -> list[str]:
    return re.findall(rf"{label} (?:before|after)\S*:? +(.+)", output)


@pytest.mark.slow
def test_train_nli_mixture_under_torchrun_two_cpu_processes(tmp_path):
    launcher = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2")
    args = ("--rows=48", "--batch-size=4", "--max-steps=3", "--sts-pairs=300", f"--output-dir={tmp_path}")
    out = run_example("train_nli.py", *args, launcher=launcher)
    assert len(scores(out, "STS-B dev Spearman")) == 2, out  # before and after, printed by rank 0 only
    assert "'epoch': '0.25'" in out, out  # 3 steps x 2 ranks x 4 rows of 96: the ranks shared the epoch
    assert (tmp_path / "final" / "modules.json").is_file()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("script", "args"),
    [
        ("train_simcse_unsup.py", ("--rows=64", "--batch-size=8", "--max-steps=2", "--mini-batch-size=4")),
        ("train_matryoshka.py", ("--rows=32", "--batch-size=8", "--max-steps=2")),
    ],
)
def test_sts_examples_under_accelerate_launch(script, args, tmp_path):
    launcher = ("-m", "accelerate.commands.launch", "--config_file", str(ROOT / "examples/accelerate/cpu.yaml"))
    out = run_example(script, *args, "--sts-pairs=200", f"--output-dir={tmp_path}", launcher=launcher)
    before, after = re.search(r"before:? +(.+)", out), re.search(r"after:? +(.+)", out)
    assert before and after, out
    if script == "train_matryoshka.py":
        assert re.findall(r"(\d+): \d+\.\d\d", after.group(1)) == ["384", "256", "128", "64", "32"]
    assert (tmp_path / "final" / "modules.json").is_file()


@pytest.mark.slow
def test_retrieval_hard_negatives_example(tmp_path):
    out = run_example("train_retrieval_hardnegatives.py", "--max-docs=400", "--max-steps=1", f"--output-dir={tmp_path}")
    assert re.search(r"held-out nDCG@10 before: 0\.\d{4}", out) and re.search(r"held-out nDCG@10 after: 0\.\d{4}", out)
    assert re.search(r"\d+ training pairs from 28 queries -> \d+ triplets", out)
