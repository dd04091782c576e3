"""Shared by the adapter examples: command-line options and a short MNRL trainer run on NLI triplets.

Data comes from ../shared/data (see its README); nothing is downloaded.
"""

from __future__ import annotations

import argparse

from _common import nli_triplets
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.base.sampler import BatchSamplers
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss


def add_training_arguments(parser: argparse.ArgumentParser, *, learning_rate: float) -> None:
    parser.add_argument("--num-triplets", type=int, default=512, help="NLI (anchor, positive, negative) triplets")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-steps", type=int, default=-1, help="stop after this many steps (-1: one epoch)")
    parser.add_argument("--learning-rate", type=float, default=learning_rate)
    parser.add_argument("--max-seq-length", type=int, default=64)


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
