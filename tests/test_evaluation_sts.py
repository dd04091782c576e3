"""Local STS tasks: file parsing, MTEB scores against Sentence Transformers' own STS evaluator, bad files."""

from __future__ import annotations

import random

import mteb
import numpy as np
import pytest
import torch
from evaluation_helpers import STSB_TEST, stsb_rows, write_headed_sts
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

from st_contrast.evaluation import (
    DataFormatError,
    LocalSTSTask,
    evaluate_model,
    preserved_rng_state,
    read_sts_file,
    sts_task_from_file,
)


@pytest.fixture(scope="module")
def minilm(minilm_path) -> SentenceTransformer:
    return SentenceTransformer(minilm_path, device="cpu")


def test_reads_the_sts_benchmark_layout(shared_data):
    expected = stsb_rows(shared_data)
    pairs = read_sts_file(shared_data.joinpath(*STSB_TEST))
    assert len(pairs) == 1379
    assert list(zip(pairs.sentences1, pairs.sentences2, pairs.scores, strict=True)) == expected


@pytest.mark.parametrize("file_name, delimiter", [("pairs.tsv", "\t"), ("pairs.tsv.gz", "\t"), ("pairs.csv", ",")])
def test_reads_headed_files(tmp_path, shared_data, file_name, delimiter):
    rows = stsb_rows(shared_data, limit=50)  # includes stray quotes and commas inside sentences
    path = write_headed_sts(tmp_path / file_name, rows, delimiter)
    pairs = read_sts_file(path)
    assert list(zip(pairs.sentences1, pairs.sentences2, pairs.scores, strict=True)) == rows


def test_gzip_is_recognised_by_content(tmp_path, shared_data):
    rows = stsb_rows(shared_data, limit=10)
    path = write_headed_sts(tmp_path / "pairs.tsv.gz", rows)
    renamed = path.rename(tmp_path / "pairs.tsv")
    assert read_sts_file(renamed).scores == [score for _, _, score in rows]


def test_mteb_scores_match_sentence_transformers_evaluator(tmp_path, shared_data, minilm):
    rows = stsb_rows(shared_data, limit=200)
    task = sts_task_from_file(write_headed_sts(tmp_path / "sts.csv", rows, ","), name="stsb-200")
    results = evaluate_model(minilm, [task], batch_size=64)

    evaluator = EmbeddingSimilarityEvaluator(
        [a for a, _, _ in rows],
        [b for _, b, _ in rows],
        [score / 5 for _, _, score in rows],
        name="ref",
        similarity_fn_names=["cosine", "euclidean", "manhattan"],
    )
    reference = evaluator(minilm)
    metrics = results["stsb-200"]["metrics"]
    assert results["stsb-200"]["main_metric"] == "cosine_spearman"
    assert results["stsb-200"]["main_score"] == pytest.approx(reference["ref_spearman_cosine"], abs=1e-6)
    assert metrics["cosine_pearson"] == pytest.approx(reference["ref_pearson_cosine"], abs=1e-5)
    assert metrics["euclidean_spearman"] == pytest.approx(reference["ref_spearman_euclidean"], abs=1e-5)
    assert metrics["manhattan_spearman"] == pytest.approx(reference["ref_spearman_manhattan"], abs=1e-5)


def test_task_reloads_after_unload(shared_data, minilm):
    rows = stsb_rows(shared_data, limit=40)
    task = LocalSTSTask(*zip(*rows, strict=True), name="reload")
    first = evaluate_model(minilm, [task])["reload"]["main_score"]
    task.unload_data()
    assert task.metadata.name == "reload"  # MTEB's own unload_data would drop the metadata of an instance
    assert evaluate_model(minilm, [task])["reload"]["main_score"] == pytest.approx(first, abs=1e-7)


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def _draw() -> tuple:
    return torch.rand(3).tolist(), random.random(), float(np.random.rand())


def test_caller_random_state_is_kept(shared_data, minilm):
    rows = stsb_rows(shared_data, limit=20)
    _seed_all(123)
    expected = _draw()
    _seed_all(123)
    task = LocalSTSTask(*zip(*rows, strict=True), name="rng")
    evaluate_model(minilm, [task])
    assert _draw() == expected
    # the reference: building a stock MTEB task reseeds everything, which the check above would catch
    _seed_all(123)
    mteb.get_task("STSBenchmark")
    assert _draw() != expected
    _seed_all(123)
    with preserved_rng_state():
        _seed_all(0)
    assert _draw() == expected


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="STS file not found: .*nope.tsv"):
        sts_task_from_file(tmp_path / "nope.tsv")


@pytest.mark.parametrize(
    "content, match",
    [
        ("a\tb\tlabel\nx\ty\t1\n", r"pairs.tsv, line 1: cannot tell the columns .*sentence1, sentence2 and score"),
        ("sentence1\tsentence2\tscore\nx\ty\t1\nx\ty\thigh\n", r"pairs.tsv, line 3: the score 'high' is not a number"),
        ("sentence1\tsentence2\tscore\nx\ty\t1\nx\ty\n", r"pairs.tsv, line 3: expected at least 3 tab-separated"),
        ("sentence1\tsentence2\tscore\nx\ty\t7\n", r"pairs.tsv, line 2: the score 7.0 is outside \[0.0, 5.0\]"),
        ("g\tf\ty\t1\t2.5\tx\n", r"pairs.tsv, line 1: cannot tell the columns"),  # STS-B layout needs 7 fields
        ("", r"pairs.tsv: the file is empty"),
        ("sentence1\tsentence2\tscore\n", r"pairs.tsv: the file has a header but no sentence pairs"),
    ],
)
def test_bad_files_name_file_and_line(tmp_path, content, match):
    path = tmp_path / "pairs.tsv"
    path.write_text(content, encoding="utf8")
    with pytest.raises(DataFormatError, match=match):
        read_sts_file(path)


def test_other_score_scales(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("sentence1\tsentence2\tscore\na\tb\t-1\nc\td\t1\n", encoding="utf8")
    assert sts_task_from_file(path, min_score=-1, max_score=1).min_score == -1


@pytest.mark.slow
def test_stsb_test_reproduces_the_published_score(shared_data, minilm):
    results = evaluate_model(minilm, [f"sts:{shared_data.joinpath(*STSB_TEST)}"], batch_size=64)
    assert round(results["stsbenchmark-test"]["main_score"] * 100, 2) == 82.03  # MTEB's published value
    assert round(results["stsbenchmark-test"]["metrics"]["cosine_pearson"] * 100, 2) == 82.74


def test_a_task_prompt_reaches_the_model(tmp_path, shared_data, minilm):
    """The spec's ``prompt`` is applied to both sentences (MTEB would take prompts only from ``model.prompts``)."""
    from scipy.stats import spearmanr

    rows = stsb_rows(shared_data, limit=120)
    path = write_headed_sts(tmp_path / "sts.csv", rows, ",")
    prompt = "Retrieve semantically similar text: "
    results = evaluate_model(minilm, [{"type": "sts", "path": str(path), "name": "prompted", "prompt": prompt}])
    first = minilm.encode([a for a, _, _ in rows], prompt=prompt, convert_to_tensor=True)
    second = minilm.encode([b for _, b, _ in rows], prompt=prompt, convert_to_tensor=True)
    expected = spearmanr(torch.cosine_similarity(first, second).numpy(), [score for _, _, score in rows])[0]
    assert results["prompted"]["main_score"] == pytest.approx(expected, abs=1e-6)
    plain = evaluate_model(minilm, [{"type": "sts", "path": str(path), "name": "plain"}])["plain"]["main_score"]
    assert plain != pytest.approx(expected, abs=1e-4), "the prompt must matter for this check to mean anything"
    assert minilm.prompts == {"query": "", "document": ""} or "prompted" not in minilm.prompts
