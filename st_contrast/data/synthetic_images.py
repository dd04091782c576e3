"""Offline image-text sets for examples and tests: scikit-learn's handwritten digits and rendered shapes.

Nothing is downloaded: ``sklearn.datasets.load_digits`` ships 1,797 real 8x8 digit scans, and the shapes are drawn
with Pillow. Each set is a folder of PNG files and one JSON Lines file per split whose ``image`` column holds paths
relative to the file (the layout :func:`~st_contrast.data.load_dataset_spec` reads with ``image_columns``)::

    DIR/digits/train.jsonl   {"image": "images/00012.png", "caption": "a handwritten digit seven", "label": "seven"}
    DIR/digits/test.jsonl    held-out scans, same fields
    DIR/shapes/train.jsonl   {"image": "images/train_00000.png", "caption": "a red circle on the left", ...}
    DIR/shapes/test.jsonl    one new rendering of every (shape, colour, position), so each caption names one image
    DIR/shapes/shards/       (write_shape_shards) the train split as webdataset tar shards with sizes.json
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

__all__ = [
    "COLOURS",
    "DIGIT_NAMES",
    "POSITIONS",
    "SHAPES",
    "write_digits",
    "write_image_text_sets",
    "write_shape_shards",
    "write_shapes",
]

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (40, 60, 230), "yellow": (240, 210, 20)}
POSITIONS = ("on the left", "on the right", "at the top", "at the bottom")
_DONE = "done.json"


def _write_split(folder: Path, split: str, rows: list[dict[str, Any]]) -> None:
    with open(folder / f"{split}.jsonl", "w", encoding="utf8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)


def _finished(folder: Path, settings: dict[str, Any]) -> bool:
    done = folder / _DONE
    return done.is_file() and json.loads(done.read_text(encoding="utf8")) == settings


def write_digits(directory: str | Path, *, test_fraction: float = 0.2, size: int = 32, seed: int = 0) -> Path:
    """scikit-learn's digits as ``size`` x ``size`` PNGs with captions ``"a handwritten digit seven"``.

    The scans are shuffled with ``seed`` and split into train and a held-out ``test`` (``test_fraction``). A folder
    already written with the same settings is left as it is.

    Returns:
        ``directory/digits``.
    """
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    folder = Path(directory) / "digits"
    settings = {"test_fraction": test_fraction, "size": size, "seed": seed}
    if _finished(folder, settings):
        return folder
    (folder / "images").mkdir(parents=True, exist_ok=True)
    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))
    num_test = round(len(order) * test_fraction)
    rows = []
    for position, index in enumerate(order):
        pixels = (255 - digits.images[index] * (255 / 16)).astype("uint8")  # dark ink on white paper
        name = f"images/{position:05d}.png"
        Image.fromarray(pixels, mode="L").resize((size, size), Image.Resampling.BILINEAR).save(folder / name)
        label = DIGIT_NAMES[digits.target[index]]
        rows.append({"image": name, "caption": f"a handwritten digit {label}", "label": label})
    _write_split(folder, "test", rows[:num_test])
    _write_split(folder, "train", rows[num_test:])
    (folder / _DONE).write_text(json.dumps(settings), encoding="utf8")
    return folder


def _draw_shape(shape: str, colour: str, position: str, size: int, rng: random.Random):
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    radius = size * rng.uniform(0.14, 0.2)
    centre_x, centre_y = {
        "on the left": (0.25, 0.5),
        "on the right": (0.75, 0.5),
        "at the top": (0.5, 0.25),
        "at the bottom": (0.5, 0.75),
    }[position]
    x = size * (centre_x + rng.uniform(-0.06, 0.06))
    y = size * (centre_y + rng.uniform(-0.06, 0.06))
    fill = COLOURS[colour]
    box = (x - radius, y - radius, x + radius, y + radius)
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([(x, y - radius), (x - radius, y + radius), (x + radius, y + radius)], fill=fill)
    else:  # cross
        bar = radius / 3
        draw.rectangle((x - radius, y - bar, x + radius, y + bar), fill=fill)
        draw.rectangle((x - bar, y - radius, x + bar, y + radius), fill=fill)
    return image


def write_shapes(directory: str | Path, *, train_per_combination: int = 16, size: int = 32, seed: int = 0) -> Path:
    """Rendered shapes x colours x positions with captions such as ``"a red circle on the left"``.

    Retrieval by caption needs all three attributes: ``train`` holds ``train_per_combination`` renderings (random
    size and offset) of each of the 64 combinations, ``test`` one new rendering of each (64 distinct captions).

    Returns:
        ``directory/shapes``.
    """
    folder = Path(directory) / "shapes"
    settings = {"train_per_combination": train_per_combination, "size": size, "seed": seed}
    if _finished(folder, settings):
        return folder
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    combinations = [(s, c, p) for s in SHAPES for c in COLOURS for p in POSITIONS]
    for split, copies in (("train", train_per_combination), ("test", 1)):
        rows = []
        for shape, colour, position in combinations * copies:
            name = f"images/{split}_{len(rows):05d}.png"
            _draw_shape(shape, colour, position, size, rng).save(folder / name)
            rows.append({"image": name, "caption": f"a {colour} {shape} {position}", "shape": shape})
        rng.shuffle(rows)
        _write_split(folder, split, rows)
    (folder / _DONE).write_text(json.dumps(settings), encoding="utf8")
    return folder


def write_image_text_sets(directory: str | Path, **options: Any) -> Path:
    """Both sets (:func:`write_digits`, :func:`write_shapes`) under ``directory``; ``options``: shared settings
    (``size``, ``seed``). Returns ``directory``."""
    write_digits(directory, **options)
    write_shapes(directory, **options)
    return Path(directory)


def write_shape_shards(directory: str | Path, *, shard_size: int = 256, **options: Any) -> Path:
    """:func:`write_shapes`, and its train split as webdataset tar shards of ``shard_size`` samples in
    ``directory/shapes/shards`` (:func:`~st_contrast.data.write_tar_shards`), the layout a stream reads from object
    storage. Returns ``directory``."""
    from st_contrast.data.shard_writer import write_tar_shards

    folder = write_shapes(directory, **options)
    done = folder / "shards.done.json"  # beside the shards: their folder holds shards and sizes.json only
    settings = json.dumps({"shard_size": shard_size, **options})
    if not (done.is_file() and done.read_text(encoding="utf8") == settings):
        write_tar_shards(folder / "train.jsonl", folder / "shards", shard_size=shard_size)
        done.write_text(settings, encoding="utf8")
    return Path(directory)
