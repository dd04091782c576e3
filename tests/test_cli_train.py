"""st-contrast train end to end: the quickstart, resume after a kill, two ranks under torchrun, refusals."""

from __future__ import annotations

import csv
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from s3_server import free_port
from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

import st_contrast
from st_contrast.cli import main

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)])}
TIMEOUT_S = 400


def read_rows(path: Path, limit: int | None = None) -> list[dict[str, str]]:
    with gzip.open(path, "rt", encoding="utf8") as handle:
        return list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))[:limit]


def write_tsv(path: Path, rows: list[dict[str, str]]) -> str:
    with path.open("w", encoding="utf8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


def recording_config(model_path: str, output_dir: Path, record_dir: Path, datasets: list[dict], **training) -> dict:
    """A tiny run whose loss records the sample indices each rank trains on (tests/recording_loss.py)."""
    return {
        "output_dir": str(output_dir),
        "seed": 5,
        "model": {"name_or_path": model_path, "max_seq_length": 32},
        "loss": {"name": "recording_loss:RecordingLoss", "kwargs": {"record_dir": str(record_dir)}},
        "data": {"datasets": datasets, "batch_sampler": "batch_sampler", "sample_index": True},
        "training": {
            "per_device_train_batch_size": 4,
            "learning_rate": 1e-3,
            "save_steps": 2,
            "use_cpu": True,
            "dataloader_drop_last": True,
            **training,
        },
    }


def write_config(path: Path, config: dict) -> str:
    path.write_text(yaml.safe_dump(config), encoding="utf8")
    return str(path)


def run_cli(*args: str, launcher: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    command = [sys.executable, *launcher, "-m", "st_contrast.cli", *args]
    try:
        return subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=TIMEOUT_S, cwd=ROOT)
    except subprocess.TimeoutExpired as error:
        raise AssertionError(f"st-contrast hung:\n{error.stdout}\n{error.stderr}") from error


def records(record_dir: Path, rank: int = 0) -> list[list[int]]:
    lines = (record_dir / f"rank{rank}.jsonl").read_text(encoding="utf8").splitlines()
    return [json.loads(line)["labels"] for line in lines]


def flat_weights(model) -> torch.Tensor:
    return torch.cat([parameter.detach().flatten() for parameter in model.parameters()])


@pytest.mark.slow
def test_quickstart_small_form(tmp_path, shared_data, plain_sentence_transformers):
    """The README's main job with fewer rows and steps: STS-B test 82.03 before, a reloadable model after."""
    output_dir = tmp_path / "quickstart"
    code = main(
        [
            "train",
            str(ROOT / "examples" / "configs" / "quickstart.yaml"),
            "--set", f"output_dir={output_dir}",
            "--set", "data.datasets.0.max_rows=128",
            "--set", "training.max_steps=2",
            "--set", "training.save_steps=1",
            "--set", "training.logging_steps=1",
            "--set", "training.eval_steps=2",
        ]
    )  # fmt: skip
    assert code == 0
    metrics = json.loads((output_dir / "metrics.json").read_text())
    task = "stsbenchmark-test"
    assert metrics["before"][task]["main_score"] == pytest.approx(0.8203, abs=5e-5)
    assert metrics["train"]["epoch"] > 0 and (output_dir / "config.yaml").is_file()
    log = [json.loads(line) for line in (output_dir / "log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == [1, 2] and all(entry["tokens_seen"] > 0 for entry in log)
    evaluations = [json.loads(line) for line in (output_dir / "eval.jsonl").read_text().splitlines()]
    assert 0 < evaluations[-1]["eval_geometry_effective_rank"] <= 384
    assert main(["describe", str(output_dir)]) == 0
    assert (output_dir / "plots" / "loss.png").stat().st_size > 10_000

    modules = json.loads((output_dir / "model" / "modules.json").read_text())
    assert all(entry["type"].startswith("sentence_transformers.") for entry in modules), modules
    reloaded = st_contrast.load_model(str(output_dir / "model"), device="cpu")
    assert isinstance(reloaded[0], st_contrast.FlashTransformer)  # packed again by st_contrast's loader
    texts = ["A man is playing a guitar.", "x", " ".join(["A long sentence that gets truncated."] * 30)]
    plain = plain_sentence_transformers.encode(output_dir / "model", texts)  # where st_contrast cannot be imported
    assert (torch.from_numpy(plain) - reloaded.encode(texts, convert_to_tensor=True)).abs().max().item() < 1e-5
    with gzip.open(shared_data / "sts" / "stsbenchmark" / "test.tsv.gz", "rt", encoding="utf8") as handle:
        sts = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    evaluator = EmbeddingSimilarityEvaluator(
        [row[5] for row in sts], [row[6] for row in sts], [float(row[4]) for row in sts], name="sts"
    )
    assert evaluator(reloaded)[evaluator.primary_metric] == pytest.approx(
        metrics["after"][task]["main_score"], abs=1e-4
    )


def test_rerun_after_a_kill_resumes_from_the_checkpoint(tmp_path, tiny_model_factory, shared_data):
    """Killed after step 3 (checkpoint at 2): rerunning continues at step 3 and ends where an unbroken run ends."""
    path = write_tsv(tmp_path / "nli.tsv", read_rows(shared_data / "nli" / "derived" / "triplets.tsv.gz", 40))
    datasets = [{"name": "nli", "path": path, "objective": "triplet"}]
    model = tiny_model_factory("bert")

    reference = recording_config(model, tmp_path / "ref", tmp_path / "ref-records", datasets, max_steps=5)
    killed = recording_config(model, tmp_path / "run", tmp_path / "run-records", datasets, max_steps=5)
    killed["loss"]["kwargs"]["exit_after"] = 3
    first = run_cli("train", write_config(tmp_path / "killed.yaml", killed))
    assert first.returncode == 17, first.stderr[-3000:]
    assert (tmp_path / "run" / "checkpoint-2").is_dir() and not (tmp_path / "run" / "model").exists()
    (tmp_path / "run-records" / "rank0.jsonl").rename(tmp_path / "first.jsonl")

    second = run_cli("train", write_config(tmp_path / "killed.yaml", killed), "--set", "loss.kwargs.exit_after=null")
    assert second.returncode == 0, second.stderr[-3000:]
    # the rerun changed a setting: it says which, and the configuration the run started with is kept beside the new
    assert "changed configuration (loss.kwargs.exit_after)" in second.stderr
    started_with = yaml.safe_load((tmp_path / "run" / "config.before-step-2.yaml").read_text())
    assert started_with["loss"]["kwargs"]["exit_after"] == 3
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["loss"]["kwargs"]["exit_after"] is None
    full = run_cli("train", write_config(tmp_path / "reference.yaml", reference))
    assert full.returncode == 0, full.stderr[-3000:]

    unbroken = records(tmp_path / "ref-records")
    assert len(unbroken) == 5
    assert [json.loads(line)["labels"] for line in (tmp_path / "first.jsonl").read_text().splitlines()] == unbroken[:3]
    assert records(tmp_path / "run-records") == unbroken[2:], "the rerun did not continue after checkpoint-2"
    state = json.loads((tmp_path / "run" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    resumed = st_contrast.load_model(str(tmp_path / "run" / "model"), device="cpu")
    straight = st_contrast.load_model(str(tmp_path / "ref" / "model"), device="cpu")
    torch.testing.assert_close(flat_weights(resumed), flat_weights(straight), atol=1e-6, rtol=1e-5)


LAUNCHERS = {
    "torchrun": ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"),
    # accelerate's torch-elastic launcher on 2 CPU processes (no MPI); the run's use_cpu + gloo keep them on the CPU
    "accelerate": (
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(ROOT / "examples/accelerate/multi_cpu.yaml"),
    ),
}


@pytest.mark.parametrize("launcher", ["torchrun", pytest.param("accelerate", marks=pytest.mark.slow)])
def test_two_ranks_share_the_dataset_of_each_step(tmp_path, tiny_model_factory, shared_data, launcher):
    triplets = read_rows(shared_data / "nli" / "derived" / "triplets.tsv.gz", 64)
    first = write_tsv(tmp_path / "a.tsv", triplets[:40])
    second = write_tsv(tmp_path / "b.tsv", triplets[40:64])
    datasets = [
        {"name": "a", "path": first, "objective": "triplet"},
        {"name": "b", "path": second, "objective": "triplet"},
    ]
    config = recording_config(
        tiny_model_factory("bert"), tmp_path / "run", tmp_path / "records", datasets, max_steps=6, ddp_backend="gloo"
    )
    port = ("--main_process_port", str(free_port())) if launcher == "accelerate" else ()  # tests may run in parallel
    result = run_cli("train", write_config(tmp_path / "ddp.yaml", config), launcher=LAUNCHERS[launcher] + port)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]

    rank0, rank1 = records(tmp_path / "records", 0), records(tmp_path / "records", 1)
    assert len(rank0) == len(rank1) == 6
    datasets_seen = set()
    for step, (rows0, rows1) in enumerate(zip(rank0, rank1, strict=True)):
        source = {("a" if index < 40 else "b") for index in rows0 + rows1}
        assert len(source) == 1, f"step {step} mixed datasets across ranks: {rows0} / {rows1}"
        assert not set(rows0) & set(rows1), f"step {step}: both ranks trained on the same rows"
        datasets_seen |= source
    assert datasets_seen == {"a", "b"}
    assert (tmp_path / "run" / "model" / "modules.json").is_file()


def test_refusals_are_clear(tmp_path, tiny_model_factory, shared_data, capsys):
    path = write_tsv(tmp_path / "nli.tsv", read_rows(shared_data / "nli" / "derived" / "triplets.tsv.gz", 8))
    config = recording_config(
        tiny_model_factory("bert"), tmp_path / "run", tmp_path / "rec", [{"name": "n", "path": path}], max_steps=1
    )
    (tmp_path / "run" / "checkpoint-3").mkdir(parents=True)
    (tmp_path / "run" / "checkpoint-3" / "trainer_state.json").write_text("{}")
    assert main(["train", write_config(tmp_path / "c.yaml", config), "--no-resume"]) == 2
    assert "already holds checkpoints" in capsys.readouterr().err
    assert main(["train", write_config(tmp_path / "c.yaml", config), "--set", "loss.name=NoSuchLoss"]) == 2
    assert "Unknown loss 'NoSuchLoss'" in capsys.readouterr().err
    config["data"]["batch_sampler"] = "token_budget"
    assert main(["train", write_config(tmp_path / "d.yaml", config), "--output-dir", str(tmp_path / "new")]) == 2
    assert "needs data.max_tokens" in capsys.readouterr().err


def test_a_final_model_with_no_exact_plain_form_is_saved_for_load_model(
    tmp_path, tiny_model_factory, shared_data, monkeypatch, caplog
):
    """When export_model refuses (no plain form can be exact; nothing written), the run still ends: model/ is
    st_contrast's own save, which load_model reads back as the final checkpoint's weights."""
    import st_contrast.model_io

    def refusing_export(*args, **kwargs):
        raise ValueError("no plain form can be exact (the test's refusal)")

    monkeypatch.setattr(st_contrast.model_io, "export_model", refusing_export)
    path = write_tsv(tmp_path / "nli.tsv", read_rows(shared_data / "nli" / "derived" / "triplets.tsv.gz", 8))
    config = recording_config(
        tiny_model_factory("bert"), tmp_path / "run", tmp_path / "rec", [{"name": "n", "path": path}], max_steps=2
    )
    with caplog.at_level("WARNING", logger="st_contrast.training.run"):
        assert main(["train", write_config(tmp_path / "c.yaml", config)]) == 0
    assert "The final model needs st_contrast.load_model: no plain form can be exact" in caplog.text
    texts = ["a man is playing a guitar", "two dogs run on the beach"]
    final = st_contrast.load_model(str(tmp_path / "run" / "model"), device="cpu").encode(texts, convert_to_tensor=True)
    checkpoint = st_contrast.load_model(str(tmp_path / "run" / "checkpoint-2"), device="cpu")
    torch.testing.assert_close(final, checkpoint.encode(texts, convert_to_tensor=True), atol=1e-6, rtol=1e-5)
    assert "train" in json.loads((tmp_path / "run" / "metrics.json").read_text())
