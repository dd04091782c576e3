"""``st-contrast eval``: table, results.json and MTEB JSON, model loading, and clear errors."""

from __future__ import annotations

import json

import pytest
from evaluation_helpers import stsb_rows, write_headed_sts, write_toy_beir
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator
from sentence_transformers.sentence_transformer.modules import Pooling

from st_contrast.cli import main
from st_contrast.modules import FlashTransformer


def _table_rows(stdout: str) -> dict[str, list[str]]:
    lines = stdout.strip().splitlines()
    assert lines[0].split() == ["task", "split", "metric", "score"]
    rows = {}
    for line in lines[1:]:
        if not line.strip():
            break
        cells = line.split()
        rows[cells[0]] = cells[1:]
    return rows


def _reference_spearman(model: SentenceTransformer, rows) -> float:
    evaluator = EmbeddingSimilarityEvaluator([r[0] for r in rows], [r[1] for r in rows], [r[2] / 5 for r in rows])
    return evaluator(model)[f"{evaluator.primary_metric}"]


@pytest.fixture
def small_sts(tmp_path, shared_data):
    # Each pair once: a repeated pair ties in Spearman's ranks, and MTEB embeds its sentences in other batches (other
    # padding) than the reference does, which can part the tie by 1e-8 and move the score by 5e-6 on some CPUs.
    rows = list({(a, b): (a, b, score) for a, b, score in stsb_rows(shared_data, limit=80)}.values())
    return rows, write_headed_sts(tmp_path / "sts-small.tsv.gz", rows)


def test_eval_minilm_writes_table_and_json(tmp_path, small_sts, minilm_path, capsys):
    rows, sts_path = small_sts
    toy = write_toy_beir(tmp_path / "toy")
    out = tmp_path / "out"
    argv = ["eval", "minilm", "--tasks", f"sts:{sts_path}", f"retrieval:{toy}", "--output-dir", str(out)]
    assert main([*argv, "--batch-size", "16", "--device", "cpu", "--no-progress"]) == 0
    table = _table_rows(capsys.readouterr().out)

    results = json.loads((out / "results.json").read_text())
    assert list(results) == list(table) and len(table) == 2
    for name, (split, metric, score) in table.items():
        assert (split, metric) == ("test", results[name]["main_metric"])
        assert score == f"{100 * results[name]['main_score']:.2f}"
        mteb_json = json.loads((out / "mteb" / f"{name}.json").read_text())
        assert mteb_json["task_name"] == name
        assert mteb_json["scores"]["test"][0]["main_score"] == pytest.approx(results[name]["main_score"], abs=1e-6)
    sts_name = next(name for name in results if name.endswith("sts-small"))
    assert table[sts_name][1] == "cosine_spearman" and table["toy"][1] == "ndcg_at_10"
    reference = _reference_spearman(SentenceTransformer(minilm_path, device="cpu"), rows)
    assert results[sts_name]["main_score"] == pytest.approx(reference, abs=1e-6)


def test_eval_saved_flash_model_and_default_output_dir(tmp_path, small_sts, tiny_model_factory, monkeypatch, capsys):
    rows, sts_path = small_sts
    backbone = FlashTransformer(tiny_model_factory("bert"), max_seq_length=64, attention_backend="sdpa")
    model = SentenceTransformer(modules=[backbone, Pooling(backbone.get_embedding_dimension(), "mean")], device="cpu")
    for run in ("a", "b"):  # two runs' models, both called "model": their default output folders differ
        model.save(str(tmp_path / "runs" / run / "model"))
    monkeypatch.chdir(tmp_path)
    for run in ("a", "b"):
        argv = ["eval", f"runs/{run}/model", "--tasks", f"sts:{sts_path}", "--device", "cpu", "--no-progress"]
        assert main(argv) == 0
    folders = sorted(path.parent for path in (tmp_path / "output" / "eval").glob("*/results.json"))
    assert all(folder.name.endswith(f"runs__{run}__model") for folder, run in zip(folders, "ab", strict=True))
    results = json.loads((folders[0] / "results.json").read_text())
    (name,) = results
    assert results[name]["main_score"] == pytest.approx(_reference_spearman(model, rows), abs=1e-6)
    assert _table_rows(capsys.readouterr().out)[name][2] == f"{100 * results[name]['main_score']:.2f}"


def test_eval_two_files_of_the_same_name_need_and_take_names(tmp_path, small_sts, minilm_path, capsys):
    """Both files default to 'data-test'; 'NAME=sts:PATH' names them (a '=' inside a path stays part of it)."""
    rows, _ = small_sts
    first, second = tmp_path / "x" / "data" / "test.tsv.gz", tmp_path / "y=2" / "data" / "test.tsv.gz"
    second_rows = rows[::2]
    for path, path_rows in ((first, rows), (second, second_rows)):
        path.parent.mkdir(parents=True)
        write_headed_sts(path, path_rows)
    out = tmp_path / "out"
    common = ["--output-dir", str(out), "--batch-size", "16", "--device", "cpu", "--no-progress"]
    assert main(["eval", "minilm", "--tasks", f"sts:{first}", f"sts:{second}", *common]) == 2
    error = capsys.readouterr().err
    assert "two tasks are named ['data-test']" in error and "'NAME=sts:PATH' on the command line" in error

    assert main(["eval", "minilm", "--tasks", f"full=sts:{first}", f"half=sts:{second}", *common]) == 0
    assert set(_table_rows(capsys.readouterr().out)) == {"full", "half"}
    results = json.loads((out / "results.json").read_text())
    reference = SentenceTransformer(minilm_path, device="cpu")
    assert results["full"]["main_score"] == pytest.approx(_reference_spearman(reference, rows), abs=1e-6)
    assert results["half"]["main_score"] == pytest.approx(_reference_spearman(reference, second_rows), abs=1e-6)


@pytest.mark.parametrize(
    "model, tasks, message",
    [
        ("minilm", ["sts:missing/file.tsv"], "STS file not found: missing/file.tsv"),
        ("no/such/model", ["sts:missing/file.tsv"], "STS file not found"),  # tasks are checked before the model loads
        ("minilm", ["STSBenchmrk"], "Did you mean: 'STSBenchmark'"),
        ("minilm", ["retrieval:missing-dir"], "BEIR directory not found: missing-dir"),
    ],
)
def test_eval_bad_inputs(model, tasks, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["eval", model, "--tasks", *tasks, "--device", "cpu"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("st-contrast eval: error: ") and message in error
    assert not (tmp_path / "output").exists()


def test_eval_bad_model_and_named_task_offline(tmp_path, small_sts, monkeypatch, capsys):
    _, sts_path = small_sts
    (tmp_path / "empty-dir").mkdir()
    assert main(["eval", str(tmp_path / "empty-dir"), "--tasks", f"sts:{sts_path}"]) == 2
    assert "is not a saved model: it has neither modules.json nor config.json" in capsys.readouterr().err
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    argv = ["eval", "minilm", "--tasks", "STSBenchmark", "--output-dir", str(tmp_path / "o"), "--device", "cpu"]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "could not load its dataset 'mteb/stsbenchmark-sts' from the Hugging Face hub" in error
    assert "HF_HUB_OFFLINE=1 is set" in error
