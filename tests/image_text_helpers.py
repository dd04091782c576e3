"""Shared helpers of the image-text tests: tiny two-tower models, random images, image-text feature columns."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from st_contrast.recipes import two_tower_model

TINY_VIT = {
    "model_type": "vit",
    "image_size": 16,
    "patch_size": 8,
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}
"""A ViT with 4 patches: enough to tell images apart, fast enough for unit tests."""


def tiny_two_tower(text_path: str, lock: str | None = None, seed: int = 0, **kwargs):
    """A two-tower model: the text model at ``text_path`` and a random :data:`TINY_VIT`, projected to 16 dims (to
    the locked tower's size when one is locked)."""
    size = 16 if lock is None else None
    return two_tower_model(text_path, TINY_VIT, embedding_dim=size, lock=lock, seed=seed, device="cpu", **kwargs)


def random_images(count: int, seed: int = 0, size: int = 20) -> list[Image.Image]:
    generator = np.random.default_rng(seed)
    return [Image.fromarray(generator.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(count)]


def image_text_columns(model, images: list, texts: list[str]) -> list[dict[str, torch.Tensor]]:
    """The (image, text) feature columns as the trainer's collator builds them (ST's ``model.preprocess``)."""
    return [model.preprocess(images), model.preprocess(texts)]


def parameters_of(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: parameter.detach().clone() for name, parameter in module.named_parameters()}


def image_processor(folder: Path):
    """The image processor saved in ``folder``, by its class name: transformers resolves a class that needs a
    missing torchvision to its PIL twin, where ``AutoImageProcessor`` refuses (transformers 5.7 without it)."""
    from transformers.models.auto.image_processing_auto import get_image_processor_class_from_name

    name = json.loads((Path(folder) / "preprocessor_config.json").read_text())["image_processor_type"]
    return get_image_processor_class_from_name(name).from_pretrained(folder)
