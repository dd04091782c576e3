"""Task specs (strings, YAML-style dicts, MTEB tasks), named MTEB tasks offline, and the results table."""

from __future__ import annotations

import mteb
import pytest
from datasets import Dataset, DatasetDict
from evaluation_helpers import STSB_TEST, stsb_rows, write_headed_sts, write_toy_beir
from sentence_transformers import SentenceTransformer

from st_contrast.evaluation import (
    SPEC_KEYS,
    HubUnavailableError,
    LocalRetrievalTask,
    LocalSTSTask,
    TaskSpecError,
    evaluate_model,
    format_results_table,
    resolve_task,
    resolve_tasks,
)


@pytest.fixture(scope="module")
def minilm(minilm_path) -> SentenceTransformer:
    return SentenceTransformer(minilm_path, device="cpu")


def test_string_specs(shared_data, tmp_path):
    sts = resolve_task(f"sts:{shared_data.joinpath(*STSB_TEST)}")
    assert isinstance(sts, LocalSTSTask)
    assert sts.metadata.name == "stsbenchmark-test" and sts.metadata.eval_splits == ["test"]
    retrieval = resolve_task(f"retrieval:{write_toy_beir(tmp_path / 'toy')}")
    assert isinstance(retrieval, LocalRetrievalTask) and retrieval.metadata.name == "toy"
    for spec in ("STSBenchmark", "mteb:STSBenchmark"):
        named = resolve_task(spec)
        assert type(named) is type(mteb.get_task("STSBenchmark")) and not named.data_loaded
    assert resolve_task(sts) is sts


def test_dict_specs_resolve_paths_against_base_dir(tmp_path, shared_data):
    (tmp_path / "data").mkdir()
    write_headed_sts(tmp_path / "data" / "dev.tsv", stsb_rows(shared_data, limit=5))
    write_toy_beir(tmp_path / "data" / "toy")
    specs = [
        {"type": "sts", "path": "data/dev.tsv", "name": "my-sts", "split": "dev", "max_score": 5},
        {"type": "retrieval", "path": "data/toy", "prompt": {"query": "Find the passage"}, "languages": "deu-Latn"},
        {"type": "mteb", "name": "STSBenchmark", "splits": ["test"]},
    ]
    sts, retrieval, named = resolve_tasks(specs, base_dir=tmp_path)
    assert sts.metadata.name == "my-sts" and sts.metadata.eval_splits == ["dev"]
    assert sts.metadata.dataset["path"] == str((tmp_path / "data" / "dev.tsv").resolve())
    assert retrieval.metadata.prompt == {"query": "Find the passage"}
    assert retrieval.metadata.eval_langs == ["deu-Latn"]  # a single YAML value is a one-element list
    assert named.metadata.name == "STSBenchmark"
    assert set(SPEC_KEYS) == {"sts", "retrieval", "mteb", "zeroshot", "image_retrieval"}


@pytest.mark.parametrize(
    "spec, match",
    [
        (
            {"type": "csv", "path": "x"},
            r"'type' must be one of \['image_retrieval', 'mteb', 'retrieval', 'sts', 'zeroshot'\], got 'csv'",
        ),
        ({"type": "sts", "path": "x", "column": 3}, r"unknown keys \['column'\] for type 'sts'; allowed: .*'max_sc"),
        ({"type": "sts"}, r"type 'sts' needs a 'path'"),
        ({"type": "mteb"}, r"type 'mteb' needs a 'name'"),
        ({"type": "sts", "path": ""}, r"'path' must be a file or directory path"),
        ("sts:", r"names no path after 'sts:'"),
        (" =sts:x", r"gives an empty name before '='"),
        (3, r"a task spec must be a string, a dict or an MTEB task, got int"),
        ("STSBenchmrk", r"unknown task 'STSBenchmrk': not an MTEB task name .*Did you mean: 'STSBenchmark'"),
        ("data/sts.tsv", r"looks like a path: write 'sts:data/sts.tsv' for an STS file or 'retrieval:data/sts.tsv'"),
    ],
)
def test_bad_specs(spec, match):
    with pytest.raises(TaskSpecError, match=match):
        resolve_task(spec)


def test_duplicate_names_and_empty_lists(shared_data):
    path = shared_data.joinpath(*STSB_TEST)
    with pytest.raises(TaskSpecError, match=r"two tasks are named \['stsbenchmark-test'\]: give them distinct names"):
        resolve_tasks([f"sts:{path}", {"type": "sts", "path": str(path)}])
    with pytest.raises(TaskSpecError, match="no tasks given"):
        resolve_tasks([])


def test_named_task_offline_says_the_hub_is_needed(minilm, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    expected = r"'STSBenchmark' could not load its dataset 'mteb/stsbenchmark-sts'"
    with pytest.raises(HubUnavailableError, match=expected) as info:
        evaluate_model(minilm, ["STSBenchmark"])
    assert "HF_HUB_OFFLINE=1 is set" in str(info.value) and "'sts:FILE' or 'retrieval:BEIR_DIR'" in str(info.value)


@pytest.mark.filterwarnings("ignore:The task .STSBenchmark. is superseded")
def test_named_mteb_tasks_score_like_the_local_tasks(minilm, shared_data, tmp_path):
    """MTEB's own STSBenchmark / DBPedia classes, fed the same data in memory, give the local tasks' scores."""
    rows = stsb_rows(shared_data, limit=60)
    named_sts = mteb.get_task("STSBenchmark")
    columns = {"sentence1": [r[0] for r in rows], "sentence2": [r[1] for r in rows], "score": [r[2] for r in rows]}
    named_sts.dataset = DatasetDict({"test": Dataset.from_dict(columns)})
    named_sts.data_loaded = True
    local_sts = LocalSTSTask(*zip(*rows, strict=True), name="local-sts")

    local_retrieval = resolve_task(f"retrieval:{write_toy_beir(tmp_path / 'toy')}")
    local_retrieval.load_data()
    named_retrieval = mteb.get_task("DBPedia")
    named_retrieval.dataset = local_retrieval.dataset
    named_retrieval.data_loaded = True

    results = evaluate_model(minilm, [named_sts, local_sts, named_retrieval, local_retrieval])
    assert results["STSBenchmark"]["main_score"] == pytest.approx(results["local-sts"]["main_score"], abs=1e-9)
    ranking_metrics = [name for name in results["toy"]["metrics"] if not name.startswith("nauc")]
    assert len(ranking_metrics) > 40
    for name in ranking_metrics:
        assert results["DBPedia"]["metrics"][name] == pytest.approx(results["toy"]["metrics"][name], abs=1e-9), name


def test_results_table():
    after = {
        "sts-a": {"main_score": 0.82034, "main_metric": "cosine_spearman", "splits": ["test"]},
        "retrieval-b": {"main_score": 0.5114, "main_metric": "ndcg_at_10", "splits": ["test"]},
    }
    lines = format_results_table(after).splitlines()
    assert lines[0].split() == ["task", "split", "metric", "score"]
    assert lines[1].split() == ["sts-a", "test", "cosine_spearman", "82.03"]
    assert lines[2].split() == ["retrieval-b", "test", "ndcg_at_10", "51.14"]
    before = {"sts-a": {"main_score": 0.80, "main_metric": "cosine_spearman", "splits": ["test"]}}
    lines = format_results_table(after, baseline=before).splitlines()
    assert lines[0].split() == ["task", "split", "metric", "before", "after", "delta"]
    assert lines[1].split() == ["sts-a", "test", "cosine_spearman", "80.00", "82.03", "+2.03"]
    assert lines[2].split() == ["retrieval-b", "test", "ndcg_at_10", "-", "51.14", "-"]


def test_local_tasks_use_no_network_and_write_only_the_output_folder(minilm, shared_data, tmp_path, monkeypatch):
    import socket

    from mteb.cache import ResultCache

    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)  # nothing may rely on offline mode
    mteb_cache = ResultCache().cache_path  # MTEB_CACHE or ~/.cache/mteb, where mteb writes by default
    cache_before = sorted(mteb_cache.rglob("*"))
    (tmp_path / "in").mkdir()
    sts = write_headed_sts(tmp_path / "in" / "pairs.tsv", stsb_rows(shared_data, limit=30))
    toy = write_toy_beir(tmp_path / "in" / "toy")
    out = tmp_path / "out"
    evaluate_model(minilm, [{"type": "sts", "path": str(sts), "name": "pairs"}, f"retrieval:{toy}"], output_folder=out)
    assert attempts == []
    assert sorted(str(path.relative_to(out)) for path in out.rglob("*")) == [
        "mteb",
        "mteb/pairs.json",
        "mteb/toy.json",
        "results.json",
    ]
    assert sorted(mteb_cache.rglob("*")) == cache_before
