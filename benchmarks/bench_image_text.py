"""Images per second and peak memory of an image-text training step, cached (GradCache) vs uncached CLIP.

For each batch size, one training step (forward of both towers, symmetric CLIP loss, backward) of a two-tower model
(``st_contrast.recipes.two_tower_model``: a small random BERT text tower with MiniLM's tokenizer and a random ViT,
both trained) on random images with distinct captions, with:

- ``uncached``: ``st_contrast.losses.CLIPLoss``;
- ``cached``: ``st_contrast.losses.CachedInfoNCELoss`` in CLIP's form (both directions, per-direction softmax) with
  ``--mini-batch-size``: both towers embed in mini-batches;
- ``stock_cached``: Sentence Transformers' ``CachedMultipleNegativesRankingLoss`` with the same directions and
  mini-batches.

Every measurement runs in a fresh subprocess (peak memory: ``torch.cuda.max_memory_allocated`` on CUDA, on CPU the
growth of the process's peak resident set over the step). Prints one JSON object with, per batch size, the median
step seconds, images per second, the peak MiB, the loss of the batch (recomputed in eval mode: the three must agree,
``loss_max_abs_difference``) and the ratios ``cached / uncached`` (memory, time).

Usage::

    python benchmarks/bench_image_text.py                       # CPU: batches 32..256
    python benchmarks/bench_image_text.py --batch-sizes 256 1024 4096 --mini-batch-size 128 --image-size 224
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

import torch
from bench_losses import tiny_bert
from loss_steps import loss_value, time_backward_steps

METHODS = ("uncached", "cached", "stock_cached")


def build_model(text_path: str, image_size: int):
    from st_contrast.recipes import two_tower_model

    vit = {"model_type": "vit", "image_size": image_size, "patch_size": max(4, image_size // 8), "hidden_size": 128,
           "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 512}  # fmt: skip
    return two_tower_model(text_path, vit, embedding_dim=128)


def build_loss(method: str, model, mini_batch_size: int):
    from sentence_transformers.sentence_transformer.losses import CachedMultipleNegativesRankingLoss

    from st_contrast.losses import CachedInfoNCELoss, CLIPLoss

    both = {"directions": ("query_to_doc", "doc_to_query"), "partition_mode": "per_direction"}
    if method == "uncached":
        return CLIPLoss(model, temperature=0.05)
    if method == "cached":
        return CachedInfoNCELoss(model, temperature=0.05, mini_batch_size=mini_batch_size, **both)
    return CachedMultipleNegativesRankingLoss(model, mini_batch_size=mini_batch_size, **both)  # scale 20 = 1 / 0.05


def batch(size: int, image_size: int) -> tuple[list, list[str]]:
    import numpy as np
    from PIL import Image

    generator = np.random.default_rng(0)
    images = [
        Image.fromarray(generator.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8)) for _ in range(size)
    ]
    return images, [f"a photo of object number {number} on a table" for number in range(size)]


def measure(args: argparse.Namespace) -> dict:
    """One method at one batch size, in this (fresh) process."""
    from sentence_transformers.util import batch_to_device

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(args.text_model, args.image_size).to(device)
    model.train()
    loss_fn = build_loss(args.method, model, args.mini_batch_size)
    images, captions = batch(args.batch_size, args.image_size)
    features = [batch_to_device(model.preprocess(column), device) for column in (images, captions)]
    seconds, peak = time_backward_steps(model, loss_fn, features, device, args.steps, args.warmup)
    loss = loss_value(model, loss_fn, features)
    return {"seconds": seconds, "images_per_s": round(args.batch_size / seconds, 1), "peak_mib": peak, "loss": loss}


def run_one(args: argparse.Namespace, text_model: str, method: str, batch_size: int) -> dict:
    if args.in_process:
        return measure(argparse.Namespace(**{**vars(args), "method": method, "text_model": text_model,
                                             "batch_size": batch_size}))  # fmt: skip
    command = [
        sys.executable, __file__, "--worker", f"--method={method}", f"--text-model={text_model}",
        f"--device={args.device}", f"--batch-sizes={batch_size}", f"--mini-batch-size={args.mini_batch_size}",
        f"--steps={args.steps}", f"--warmup={args.warmup}", f"--image-size={args.image_size}",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{method} at batch {batch_size} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text-model", default=None, help="text model path (default: a small random BERT)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--mini-batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run every measurement in this process: a quick end-to-end check "
        "(no process start per measurement); times stand, but the peak memory figures are not each its own",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--method", choices=METHODS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.batch_size = args.batch_sizes[0]
        print(json.dumps(measure(args)))
        return

    with tempfile.TemporaryDirectory() as directory:
        text_model = args.text_model or tiny_bert(directory)
        report = {
            "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(),
            "model": f"two towers: {args.text_model or 'random BERT (hidden 128, 2 layers)'} + random ViT "
            f"({args.image_size}px, hidden 128, 2 layers), projected to 128",
            "mini_batch_size": args.mini_batch_size,
            "torch": torch.__version__,
            "in_process": args.in_process,
            "batches": {},
        }
        for batch_size in args.batch_sizes:
            figures = {method: run_one(args, text_model, method, batch_size) for method in METHODS}
            losses = [figures[method]["loss"] for method in METHODS]
            figures["loss_max_abs_difference"] = max(losses) - min(losses)
            figures["memory_ratio_cached_vs_uncached"] = round(
                figures["cached"]["peak_mib"] / max(figures["uncached"]["peak_mib"], 1e-6), 3
            )
            figures["time_ratio_cached_vs_uncached"] = round(
                figures["cached"]["seconds"] / figures["uncached"]["seconds"], 3
            )
            report["batches"][str(batch_size)] = figures
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
