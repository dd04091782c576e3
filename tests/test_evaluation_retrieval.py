"""Local BEIR retrieval tasks: reading, MTEB metrics against hand-written nDCG/MRR/recall and ST's IR evaluator."""

from __future__ import annotations

import math

import numpy as np
import pytest
from evaluation_helpers import DBPEDIA, TOY_CORPUS, TOY_QRELS, TOY_QUERIES, write_toy_beir
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

import st_contrast
from st_contrast.evaluation import DataFormatError, evaluate_model, read_beir_dir, retrieval_task_from_beir


@pytest.fixture(scope="module")
def minilm(minilm_path) -> SentenceTransformer:
    return SentenceTransformer(minilm_path, device="cpu")


def _document_text(title: str, text: str) -> str:
    # the BEIR / MTEB convention: "title text", or the text alone without a title
    return f"{title} {text}".strip() if title else text.strip()


def _handwritten_metrics(
    model, k: int, corpus=TOY_CORPUS, queries=TOY_QUERIES, judgements=TOY_QRELS
) -> dict[str, float]:
    """nDCG@k (trec_eval's linear gains), MRR@k and recall@k over the judged queries, by brute force (cosine)."""
    qrels: dict[str, dict[str, int]] = {}
    for query_id, doc_id, score in judgements:
        qrels.setdefault(query_id, {})[doc_id] = score
    doc_ids = list(corpus)
    docs = model.encode([_document_text(*corpus[doc_id]) for doc_id in doc_ids], normalize_embeddings=True)
    judged_ids = list(qrels)
    query_embeddings = model.encode([queries[query_id] for query_id in judged_ids], normalize_embeddings=True)
    ndcg, mrr, recall = [], [], []
    for query_id, query in zip(judged_ids, query_embeddings, strict=True):
        judged = qrels[query_id]
        ranking = [doc_ids[i] for i in np.argsort(-(docs @ query))][:k]
        gains = [judged.get(doc_id, 0) for doc_id in ranking]
        dcg = sum(gain / math.log2(rank + 2) for rank, gain in enumerate(gains))
        ideal = sum(gain / math.log2(rank + 2) for rank, gain in enumerate(sorted(judged.values(), reverse=True)[:k]))
        ndcg.append(dcg / ideal)
        hits = [rank for rank, gain in enumerate(gains) if gain > 0]
        mrr.append(1 / (hits[0] + 1) if hits else 0.0)
        recall.append(len(hits) / sum(1 for gain in judged.values() if gain > 0))
    return {f"ndcg_at_{k}": np.mean(ndcg), f"mrr_at_{k}": np.mean(mrr), f"recall_at_{k}": np.mean(recall)}


@pytest.mark.parametrize("compress", [False, True])
def test_reads_a_beir_directory(tmp_path, compress):
    data = read_beir_dir(write_toy_beir(tmp_path / "toy", compress=compress))
    assert data.corpus["photo"] == {"title": "Photosynthesis", "text": TOY_CORPUS["photo"][1]}
    assert data.corpus["roots"]["title"] == ""
    assert set(data.queries) == {"q-plants", "q-painter", "q-capital"}  # q-unjudged has no qrels: dropped
    assert data.dropped_queries == 1
    assert data.qrels["q-plants"] == {"photo": 1, "chloro": 2, "roots": 0}


def test_mteb_metrics_match_handwritten_and_st_evaluator(tmp_path, minilm):
    task = retrieval_task_from_beir(write_toy_beir(tmp_path / "toy"))
    results = evaluate_model(minilm, [task])
    assert list(results) == ["toy"]
    result = results["toy"]
    assert result["main_metric"] == "ndcg_at_10"
    metrics = result["metrics"]
    for k in (1, 3):
        for name, value in _handwritten_metrics(minilm, k).items():
            assert metrics[name] == pytest.approx(value, abs=1e-5), name  # MTEB rounds to 5 decimals
    assert result["main_score"] == pytest.approx(_handwritten_metrics(minilm, 10)["ndcg_at_10"], abs=1e-5)

    # Sentence Transformers' own evaluator (binary relevance: grades > 0) agrees on MRR and recall
    st_evaluator = InformationRetrievalEvaluator(
        queries={query_id: TOY_QUERIES[query_id] for query_id in {q for q, _, _ in TOY_QRELS}},
        corpus={doc_id: _document_text(*doc) for doc_id, doc in TOY_CORPUS.items()},
        relevant_docs={q: {d for q2, d, s in TOY_QRELS if q2 == q and s > 0} for q, _, _ in TOY_QRELS},
        mrr_at_k=[3],
        precision_recall_at_k=[1, 3],
        name="toy",
    )
    reference = st_evaluator(minilm)
    assert metrics["mrr_at_3"] == pytest.approx(reference["toy_cosine_mrr@3"], abs=1e-5)
    assert metrics["recall_at_1"] == pytest.approx(reference["toy_cosine_recall@1"], abs=1e-5)
    assert metrics["recall_at_3"] == pytest.approx(reference["toy_cosine_recall@3"], abs=1e-5)


def test_missing_directory_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="BEIR directory not found"):
        retrieval_task_from_beir(tmp_path / "absent")
    directory = write_toy_beir(tmp_path / "toy")
    with pytest.raises(FileNotFoundError, match=r"qrels/dev.tsv\[.gz\] is missing; qrels splits present: \['test'\]"):
        retrieval_task_from_beir(directory, split="dev")
    (directory / "corpus.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match=r"is not a BEIR directory: corpus.jsonl\[.gz\] is missing"):
        retrieval_task_from_beir(directory)


def test_qrels_naming_unknown_ids(tmp_path):
    unknown_doc = write_toy_beir(tmp_path / "a", qrels=[*TOY_QRELS[:3], ("q-capital", "atlantis", 1)])
    with pytest.raises(DataFormatError, match=r"test.tsv, line 5: corpus-id 'atlantis' is not in corpus.jsonl"):
        read_beir_dir(unknown_doc)
    unknown_query = write_toy_beir(tmp_path / "b", qrels=[("q-missing", "paris", 1)])
    with pytest.raises(DataFormatError, match=r"test.tsv, line 2: query-id 'q-missing' is not in queries.jsonl"):
        read_beir_dir(unknown_query)


@pytest.mark.parametrize(
    "file_name, content, match",
    [
        ("corpus.jsonl", '{"_id": "a", "text": "x"}\n{"_id": "b", "text": \n', r"corpus.jsonl, line 2: not valid JSON"),
        ("corpus.jsonl", '{"_id": "a", "body": "x"}\n', r"corpus.jsonl, line 1: .*needs an '_id' and a string 'text'"),
        ("corpus.jsonl", '{"_id": "a", "text": "x"}\n{"_id": "a", "text": "y"}\n', r"line 2: the corpus id 'a' appe"),
        ("qrels/test.tsv", "q-plants\tphoto\t1\n", r"test.tsv, line 1: the first line must be the header"),
        ("qrels/test.tsv", "query-id\tcorpus-id\tscore\nq-plants\tphoto\thigh\n", r"line 2: the score 'high' is not"),
        ("qrels/test.tsv", "query-id\tcorpus-id\tscore\nq-plants\tphoto\n", r"line 2: expected 3 tab-separated fields"),
    ],
)
def test_malformed_files_name_file_and_line(tmp_path, file_name, content, match):
    directory = write_toy_beir(tmp_path / "toy")
    (directory / file_name).write_text(content, encoding="utf8")
    with pytest.raises(DataFormatError, match=match):
        read_beir_dir(directory)


@pytest.mark.slow
def test_dbpedia_slice_matches_handwritten_metrics_of_stock_st(tmp_path, shared_data, minilm_path, minilm):
    """The small form of the reproduction below: the first 6 judged DBpedia queries over the 500-odd documents judged
    for them, scored through MTEB with the packed model, against nDCG/MRR/recall@10 written out by hand on stock ST's
    padded embeddings."""
    data = read_beir_dir(shared_data.joinpath(*DBPEDIA))
    query_ids = sorted(data.qrels)[:6]
    judgements = [(q, d, score) for q in query_ids for d, score in sorted(data.qrels[q].items())]
    corpus = {d: (data.corpus[d]["title"], data.corpus[d]["text"]) for _, d, _ in judgements}
    queries = {q: data.queries[q] for q in query_ids}
    directory = write_toy_beir(tmp_path / "dbpedia-slice", qrels=judgements, corpus=corpus, queries=queries)

    packed = st_contrast.load_model(minilm_path, device="cpu")
    result = evaluate_model(packed, [f"retrieval:{directory}"], batch_size=64)["dbpedia-slice"]
    assert len(corpus) > 300 and result["main_metric"] == "ndcg_at_10"
    expected = _handwritten_metrics(minilm, 10, corpus, queries, judgements)
    for name, value in expected.items():
        assert result["metrics"][name] == pytest.approx(value, abs=1e-4), name


@pytest.mark.slow
@pytest.mark.full
def test_dbpedia_subset_reproduces_the_reference(shared_data, minilm_path):
    """all-MiniLM-L6-v2 on the 5000-document DBpedia-Entity subset: MTEB 2.26's reference values (from stock ST), here
    with the model loaded packed (``st_contrast.load_model``, about twice as fast on CPU as stock padded encoding)."""
    model = st_contrast.load_model(minilm_path, device="cpu")
    results = evaluate_model(model, [f"retrieval:{shared_data.joinpath(*DBPEDIA)}"], batch_size=64)
    metrics = results["dbpedia_entity_subset"]["metrics"]
    assert round(results["dbpedia_entity_subset"]["main_score"], 4) == 0.5114
    assert round(metrics["mrr_at_10"], 3) == 0.782
    assert round(metrics["recall_at_100"], 3) == 0.942
