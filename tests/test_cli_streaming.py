"""st-contrast train on datasets streamed from a real S3-compatible server (moto on the loopback address), under
torchrun with 2 CPU processes (gloo): every row of the epoch once across the ranks, one dataset per step, and a run
killed mid-epoch that resumes at the next unseen row and ends with the weights of an uninterrupted run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from stream_helpers import write_parquet, write_shards
from test_cli_train import ENV, ROOT, TIMEOUT_S, flat_weights, recording_config, records, write_config

import st_contrast

LAUNCHER = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2")
SHARDS = [12, 12, 12, 12]  # 48 rows: 24 per rank, 6 steps of 4
EXTRA = 16  # 8 per rank: 2 steps of 4
STEPS_PER_EPOCH = 8


def run(config: Path, env: dict, *extra: str, launcher: tuple[str, ...] = LAUNCHER) -> subprocess.CompletedProcess:
    command = [sys.executable, *launcher, "-m", "st_contrast.cli", "train", str(config), *extra]
    try:
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, cwd=ROOT)
    except subprocess.TimeoutExpired as error:
        raise AssertionError(f"st-contrast hung:\n{error.stdout}\n{error.stderr}") from error


@pytest.fixture(scope="module")
def streamed(s3_server, tmp_path_factory):
    root = tmp_path_factory.mktemp("stream-corpus")
    write_shards(root / "pairs", SHARDS)
    write_parquet(root / "extra", EXTRA)
    s3_server.upload(root / "pairs", "s3://train/pairs")
    s3_server.upload(root / "extra", "s3://train/extra")
    return [
        {"name": "pairs", "path": "s3://train/pairs/shard-{00000..00003}.jsonl.gz", "objective": "paired",
         "shuffle_buffer": 10},
        {"name": "extra", "path": "s3://train/extra", "columns": {"question": "anchor", "answer": "positive"},
         "shuffle_buffer": 5},
    ]  # fmt: skip


@pytest.mark.slow
def test_torchrun_streams_from_s3_once_per_epoch_and_resumes_at_the_next_unseen_row(
    tmp_path, tiny_model_factory, s3_server, streamed
):
    env = {**ENV, **s3_server.env}
    model = tiny_model_factory("bert")
    steps = STEPS_PER_EPOCH + 4  # into the second epoch
    options = {"max_steps": steps, "ddp_backend": "gloo", "save_steps": 4}
    reference = recording_config(model, tmp_path / "ref", tmp_path / "ref-records", streamed, **options)
    killed = recording_config(model, tmp_path / "run", tmp_path / "run-records", streamed, **options)
    killed["loss"]["kwargs"]["exit_after"] = 6  # dies in step 7: checkpoint-4 is the newest

    full = run(write_config(tmp_path / "reference.yaml", reference), env)
    assert full.returncode == 0, full.stderr[:8000]
    unbroken = [records(tmp_path / "ref-records", rank) for rank in (0, 1)]
    assert len(unbroken[0]) == len(unbroken[1]) == steps

    first_epoch = []
    for step in range(steps):
        rows0, rows1 = unbroken[0][step], unbroken[1][step]
        names = {"pairs" if index < sum(SHARDS) else "extra" for index in rows0 + rows1}
        assert len(names) == 1, f"step {step} mixed datasets across ranks: {rows0} / {rows1}"
        assert not set(rows0) & set(rows1), f"step {step}: both ranks trained on the same rows"
        if step < STEPS_PER_EPOCH:
            first_epoch += rows0 + rows1
    assert sorted(first_epoch) == list(range(sum(SHARDS) + EXTRA)), "the epoch did not see every row exactly once"

    config = write_config(tmp_path / "killed.yaml", killed)
    first = run(config, env)
    assert first.returncode != 0, first.stderr[-3000:]
    assert (tmp_path / "run" / "checkpoint-4").is_dir() and not (tmp_path / "run" / "model").exists()
    for rank in (0, 1):
        state = json.loads((tmp_path / "run" / "checkpoint-4" / f"stream_state_{rank}.json").read_text())
        assert state["step"] == 4 and state["rank"] == rank
        os.rename(tmp_path / "run-records" / f"rank{rank}.jsonl", tmp_path / f"first{rank}.jsonl")

    second = run(config, env, "--set", "loss.kwargs.exit_after=null")
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-4000:]
    assert "resuming from" in second.stderr
    for rank in (0, 1):
        assert records(tmp_path / "run-records", rank) == unbroken[rank][4:], f"rank {rank} did not continue"
    resumed = st_contrast.load_model(str(tmp_path / "run" / "model"), device="cpu")
    straight = st_contrast.load_model(str(tmp_path / "ref" / "model"), device="cpu")
    torch.testing.assert_close(flat_weights(resumed), flat_weights(straight), atol=1e-6, rtol=1e-5)
