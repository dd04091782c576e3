"""timm vision towers (the image encoders of open_clip: ViT, EVA, ConvNeXt, ResNet, ...) through transformers'
``TimmWrapperModel``: a timm checkpoint (``timm/...`` on the hub, or a folder in timm's own format) or a randomly
initialised timm architecture becomes Sentence Transformers' ``Transformer`` module with timm's own preprocessing,
so a model with one saves and reloads as plain Sentence Transformers (with ``timm`` installed)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

__all__ = ["TIMM_MODEL_TYPE", "require_timm", "timm_config_kwargs", "timm_pooling", "write_random_timm_model"]

TIMM_MODEL_TYPE = "timm_wrapper"
"""The transformers ``model_type`` of every timm checkpoint (its ``config.json`` names an ``architecture``)."""


def require_timm() -> Any:
    """Import timm, or raise an ``ImportError`` that says how to get it (timm needs torchvision built for the
    installed torch; a mismatched torchvision fails at import with a ``RuntimeError``, reported here too)."""
    try:
        import timm
    except Exception as error:  # noqa: BLE001 - a broken torchvision raises RuntimeError, not ImportError
        raise ImportError(
            f"A timm vision tower needs timm and a torchvision built for this torch ({error!r}): pip install timm, "
            f"with the torchvision release that matches torch (e.g. torch 2.14.1 with torchvision 0.29.1)."
        ) from error
    return timm


def timm_pooling(pooling: str) -> str:
    """A timm tower's pooling is timm's own head (``forward_head(pre_logits=True)``: the class token, average or
    attention pooling and the final norm the architecture was trained with): ``"auto"`` and ``"pooler"`` select it.
    Patch-token ``Pooling`` is refused, as a convolutional tower has no tokens; choose timm's pooling instead with
    ``model_args: {global_pool: avg}`` (``token``, ``avg``, ``map``, ...)."""
    if pooling in ("auto", "pooler"):
        return "pooler"
    raise ValueError(
        f"vision_pooling={pooling!r}: a timm tower pools with timm's own head (vision_pooling 'auto' or 'pooler'); "
        f"to pool otherwise, set the architecture's global_pool in model_args (e.g. {{'global_pool': 'avg'}})."
    )


def timm_config_kwargs(config: Any) -> dict[str, Any]:
    """Config overrides that let transformers build a timm checkpoint: ``TimmWrapperModel`` creates the model
    headless (``num_classes=0``) and passes the checkpoint's ``model_args`` along, while timm's exports record
    ``num_classes`` among those ``model_args`` (``save_for_hf`` of timm 1.0.31), which transformers then rejects as a
    repeated argument. The head is dropped either way, so the recorded value goes."""
    model_args = dict(getattr(config, "model_args", None) or {})
    if "num_classes" not in model_args:
        return {}
    del model_args["num_classes"]
    return {"model_args": model_args}


def write_random_timm_model(config: Mapping[str, Any], output_dir: str | Path, *, seed: int = 0) -> str:
    """Save a randomly initialised timm architecture in timm's own hub format (``config.json`` with its
    ``pretrained_cfg``, which holds the preprocessing, and ``model.safetensors``), as ``timm/...`` checkpoints are.

    Args:
        config: ``{"model_type": "timm_wrapper", "architecture": "vit_tiny_patch16_224", "model_args": {...},
            "image_size": 32}``: ``architecture`` is any name of ``timm.list_models()``, ``model_args`` go to
            ``timm.create_model`` (``img_size``, ``depth``, ``drop_path_rate``, ``global_pool``...) and are saved
            with the model, ``image_size`` is the preprocessing's input size (default: ``model_args["img_size"]``,
            else the architecture's own).
        output_dir: Where to write it.
        seed: Initialisation seed.

    Returns:
        ``output_dir`` as a string, loadable by Sentence Transformers' ``Transformer`` and by ``timm.create_model``
        (``pretrained_cfg_overlay={"file": ...}``).
    """
    import torch

    timm = require_timm()
    from timm.models._hub import save_for_hf  # where timm 1.0.16 has it too

    values = {key: value for key, value in config.items() if key != "model_type"}
    architecture = values.pop("architecture", None)
    model_args = dict(values.pop("model_args", None) or {})
    image_size = values.pop("image_size", None) or model_args.get("img_size")
    if values:
        raise ValueError(
            f"Unknown key(s) {sorted(values)} of a random timm tower; known: architecture, model_args, image_size."
        )
    if not isinstance(architecture, str) or not timm.is_model(architecture):
        raise ValueError(
            f"A random timm tower needs an 'architecture' that timm knows (timm.list_models('vit_*') lists them), "
            f"got {architecture!r}."
        )
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    overlay = {"input_size": (3, *image_size)} if image_size else {}
    torch.manual_seed(seed)
    model = timm.create_model(
        architecture, pretrained=False, num_classes=0, pretrained_cfg_overlay=overlay, **model_args
    )
    # written directly, not by save_pretrained (which writes on rank 0 only: every rank builds its tower)
    save_for_hf(model, str(output_dir), model_args=model_args or None, safe_serialization=True)
    config_path = Path(output_dir) / "config.json"
    exported = json.loads(config_path.read_text())
    exported.update(timm_config_kwargs(SimpleNamespace(**exported)))
    config_path.write_text(json.dumps(exported, indent=2))
    return str(output_dir)
