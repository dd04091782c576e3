"""A streamed run resumed mid-epoch ends like an uninterrupted one: with dropout (the resumed loader must not draw
from the restored global RNG) and with gradient accumulation over an epoch whose batches are not a multiple of it
(the epoch's last, shorter accumulation must stay in its epoch). One process, a local file streamed."""

from __future__ import annotations

import json
import shutil

import pytest
from test_cli_train import flat_weights, read_rows, recording_config, records, run_cli, write_config, write_tsv

import st_contrast

ROWS, BATCH = 40, 4  # 10 batches per epoch
DROPOUT = {"hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1}


@pytest.mark.parametrize(
    ("accumulation", "resume_step", "steps"),
    [(1, 5, 20), (3, 2, 8)],  # 3: 4 optimizer steps per epoch (3 + 3 + 3 + 1 batches); step 2 is mid-epoch
    ids=["dropout", "accumulation"],
)
def test_resumed_stream_ends_with_the_weights_of_an_uninterrupted_run(
    tmp_path, tiny_model_factory, shared_data, accumulation, resume_step, steps
):
    path = write_tsv(tmp_path / "nli.tsv", read_rows(shared_data / "nli" / "derived" / "triplets.tsv.gz", ROWS))
    datasets = [{"name": "nli", "path": path, "objective": "triplet", "stream": True, "shuffle_buffer": 8}]
    config = recording_config(
        tiny_model_factory("bert"),
        tmp_path / "ref",
        tmp_path / "ref-records",
        datasets,
        num_train_epochs=2,
        per_device_train_batch_size=BATCH,
        gradient_accumulation_steps=accumulation,
        save_steps=resume_step,
        logging_steps=1,
    )
    config["model"]["config_kwargs"] = DROPOUT
    full = run_cli("train", write_config(tmp_path / "ref.yaml", config))
    assert full.returncode == 0, full.stderr[-3000:]
    unbroken = records(tmp_path / "ref-records")
    assert len(unbroken) == 2 * ROWS // BATCH

    # The run killed right after checkpoint-<resume_step>: everything newer is gone.
    run_dir = tmp_path / "run"
    shutil.copytree(tmp_path / "ref", run_dir, ignore=shutil.ignore_patterns("model", "metrics.json"))
    for checkpoint in run_dir.glob("checkpoint-*"):
        if int(checkpoint.name.split("-")[1]) > resume_step:
            shutil.rmtree(checkpoint)
    config["output_dir"] = str(run_dir)
    config["loss"]["kwargs"]["record_dir"] = str(tmp_path / "run-records")
    resumed = run_cli("train", write_config(tmp_path / "run.yaml", config), "--output-dir", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"checkpoint-{resume_step}" in resumed.stderr

    assert records(tmp_path / "run-records") == unbroken[resume_step * accumulation :]
    for run in (tmp_path / "ref", run_dir):
        state = json.loads((run / f"checkpoint-{steps}" / "trainer_state.json").read_text())
        assert state["global_step"] == steps and state["epoch"] == 2.0, (run, state["global_step"], state["epoch"])
        epochs = [entry["epoch"] for entry in state["log_history"] if "loss" in entry]
        assert epochs[-1] == 2.0 and epochs == sorted(epochs), epochs
    first = st_contrast.load_model(str(tmp_path / "ref" / "model"), device="cpu")
    second = st_contrast.load_model(str(run_dir / "model"), device="cpu")
    assert (flat_weights(first) - flat_weights(second)).abs().max().item() < 1e-6
