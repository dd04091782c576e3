"""st-contrast train on datasets streamed from a real S3-compatible server (moto on the loopback address), under
torchrun with 2 CPU processes (gloo): every row of the epoch once across the ranks, one dataset per step, and a run
killed mid-epoch that resumes at the next unseen row and ends with the weights of an uninterrupted run."""

from __future__ import annotations

import gzip
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


def test_stream_errors_are_one_line_naming_the_url(tmp_path, tiny_model_factory, s3_server, streamed, capsys):
    """A missing bucket stops before anything is written; a bad line found while training names URL and row."""
    from st_contrast.cli import main

    shard = tmp_path / "bad" / "shard-00000.jsonl.gz"
    write_shards(shard.parent, [12])
    lines = gzip.decompress(shard.read_bytes()).split(b"\n")
    lines[7] = b'{"query": "q", "document": '
    shard.write_bytes(gzip.compress(b"\n".join(lines)))
    s3_server.upload(shard.parent, "s3://train/bad")
    config = recording_config(
        tiny_model_factory("bert"),
        tmp_path / "run",
        tmp_path / "records",
        [{"name": "bad", "path": "s3://no-such-bucket/pairs", "objective": "paired"}],
        max_steps=4,
        per_device_train_batch_size=2,
    )
    path = write_config(tmp_path / "c.yaml", config)
    capsys.readouterr()
    cases = [
        ([], "s3://no-such-bucket/pairs: the bucket does not exist"),
        (
            ["--set", "data.datasets.0.path=s3://train/bad", "--set", "data.datasets.0.shuffle_buffer=1"],
            "s3://train/bad/shard-00000.jsonl.gz, row 7 (line 8): malformed JSON",
        ),
    ]
    for extra, expected in cases:
        assert main(["train", path, *extra]) == 2
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if "error" in line.lower()]
        assert len(errors) == 1 and errors[0].startswith("st-contrast train: error: "), err[-3000:]
        assert expected in errors[0] and "Traceback" not in err, errors[0]
    assert len(records(tmp_path / "records")) == 3  # rows 0-5 trained; the batch holding row 7 never formed
