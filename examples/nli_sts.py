"""Shared by the adapter examples: NLI triplets for training, STS-B dev for scoring, a short trainer run.

Data comes from ../shared/data (see its README); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import csv
import gzip
from pathlib import Path

from datasets import Dataset
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.base.sampler import BatchSamplers
from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def add_training_arguments(parser: argparse.ArgumentParser, *, learning_rate: float) -> None:
    parser.add_argument("--num-triplets", type=int, default=512, help="NLI (anchor, positive, negative) triplets")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-steps", type=int, default=-1, help="stop after this many steps (-1: one epoch)")
    parser.add_argument("--learning-rate", type=float, default=learning_rate)
    parser.add_argument("--max-seq-length", type=int, default=64)


def nli_triplets(limit: int) -> Dataset:
    with gzip.open(SHARED_DATA / "nli" / "derived" / "triplets.tsv.gz", "rt", encoding="utf8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))[:limit]
    return Dataset.from_dict({column: [row[column] for row in rows] for column in ("anchor", "positive", "negative")})


def stsb_dev_spearman(model: SentenceTransformer, truncate_dim: int | None = None) -> float:
    """Spearman x100 of cosine similarity against STS-B dev gold scores (optionally of truncated embeddings)."""
    with gzip.open(SHARED_DATA / "sts" / "stsbenchmark" / "dev.tsv.gz", "rt", encoding="utf8") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    evaluator = EmbeddingSimilarityEvaluator(
        sentences1=[row[5] for row in rows],
        sentences2=[row[6] for row in rows],
        scores=[float(row[4]) / 5.0 for row in rows],
        name="stsb-dev",
        truncate_dim=truncate_dim,
    )
    return evaluator(model)[evaluator.primary_metric] * 100


def train(model: SentenceTransformer, args: argparse.Namespace, output_dir: str) -> None:
    """MultipleNegativesRankingLoss on the triplets, no duplicate texts in a batch, no checkpoints."""
    training_args = SentenceTransformerTrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        num_train_epochs=1,
        max_steps=args.max_steps,
        warmup_steps=0.1,
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        save_strategy="no",
        logging_steps=5,
        report_to="none",
        use_cpu=True,
        seed=12,
    )
    trainer = SentenceTransformerTrainer(
        model=model,
        args=training_args,
        train_dataset=nli_triplets(args.num_triplets),
        loss=MultipleNegativesRankingLoss(model),
    )
    trainer.train()
