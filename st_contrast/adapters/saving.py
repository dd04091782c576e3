"""Reloading saved adapter models: checking and re-pointing the base model each adapter records."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sentence_transformers import SentenceTransformer

from st_contrast.compat import require_adapter_support

__all__ = ["adapter_bases", "check_adapter_bases", "load_adapter_model", "relink_adapter_base"]

_ADAPTER_CONFIG = "adapter_config.json"


def adapter_bases(model_dir: str | Path) -> dict[str, str]:
    """The base model each adapter in a saved model directory was trained on.

    A model saved with LoRA adapters holds only the adapter weights; the base is loaded from the
    ``base_model_name_or_path`` that peft wrote into each ``adapter_config.json`` (one per
    backbone, e.g. both towers of a ``Router``).

    Args:
        model_dir: A directory written by ``model.save(...)``.

    Returns:
        ``{adapter directory (relative to model_dir): base model path or hub id}``; empty without adapters.
    """
    root = Path(model_dir)
    return {
        str(config.parent.relative_to(root)): json.loads(config.read_text())["base_model_name_or_path"]
        for config in sorted(root.rglob(_ADAPTER_CONFIG))
    }


def check_adapter_bases(model_dir: str | Path) -> None:
    """Raise a clear error when a saved adapter model cannot be reloaded.

    :class:`~st_contrast.compat.CompatibilityError` when the installed transformers refuses the installed peft,
    ``FileNotFoundError`` when an adapter's local base model is gone (without this check the
    loader treats the missing path as a hub id and fails with an unrelated "Repo id must be in the
    form ..." message; hub ids are left to the normal loader), ``ValueError`` for adapters inside a
    ``Router`` tower, which sentence-transformers 6.2 cannot reload.

    Args:
        model_dir: A directory written by ``model.save(...)``.
    """
    bases = adapter_bases(model_dir)
    if bases:
        require_adapter_support()
    for adapter_dir, base in bases.items():
        if adapter_dir != ".":
            raise ValueError(
                f"The adapter in {Path(model_dir) / adapter_dir} sits in a module subfolder (a Router tower): "
                "sentence-transformers 6.2 looks for the base model's weights in that same subfolder of the base, "
                "so it cannot reload it. Save such models with st_contrast.adapters.merge_and_save instead."
            )
        if not base:
            raise FileNotFoundError(
                f"The adapter in {Path(model_dir) / adapter_dir} records no base model. Point it at one with "
                f"st_contrast.adapters.relink_adapter_base({str(model_dir)!r}, '<base model path or hub id>')."
            )
        if _looks_local(base) and not os.path.isdir(base):
            raise FileNotFoundError(
                f"The adapter in {Path(model_dir) / adapter_dir} was trained on the base model {base!r}, which no "
                "longer exists. Restore the base model there, or point the adapter at its new location with "
                f"st_contrast.adapters.relink_adapter_base({str(model_dir)!r}, '<new base path or hub id>'). "
                "To ship a model without its base, save it with st_contrast.adapters.merge_and_save."
            )


def relink_adapter_base(model_dir: str | Path, base_model_name_or_path: str) -> None:
    """Point every adapter in a saved model directory at a base model that moved.

    Args:
        model_dir: A directory written by ``model.save(...)`` with adapters.
        base_model_name_or_path: The base model's new local directory (made absolute) or hub id.

    Example:
        ::

            from st_contrast.adapters import relink_adapter_base

            relink_adapter_base("output/minilm-lora", "/models/all-MiniLM-L6-v2")
    """
    configs = sorted(Path(model_dir).rglob(_ADAPTER_CONFIG))
    if not configs:
        raise ValueError(f"{model_dir} holds no {_ADAPTER_CONFIG}: it is not a saved adapter model.")
    base = (
        os.path.abspath(base_model_name_or_path) if os.path.isdir(base_model_name_or_path) else base_model_name_or_path
    )
    for config_path in configs:
        config = json.loads(config_path.read_text())
        config["base_model_name_or_path"] = base
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def load_adapter_model(model_dir: str | Path, *, trainable: bool = False, **kwargs: Any) -> SentenceTransformer:
    """Load a saved adapter model through :func:`st_contrast.load_model`, which checks its base models first.

    Models with ``st_contrast`` modules load too.
    Reloaded adapters are in inference mode; ``trainable=True`` makes them trainable again to
    continue training (the base weights stay frozen).

    Args:
        model_dir: A directory written by ``model.save(...)`` with adapters.
        trainable: Enable gradients on the reloaded adapters.
        **kwargs: Forwarded to :func:`st_contrast.load_model` (``device``, ``model_kwargs``...).

    Returns:
        The model, with its adapters loaded on its backbones.

    Example:
        ::

            from st_contrast.adapters import load_adapter_model

            model = load_adapter_model("output/minilm-lora", trainable=True, device="cpu")
    """
    from peft.functional import set_requires_grad

    from st_contrast.adapters.backbones import backbone_models
    from st_contrast.loading import load_model

    model = load_model(str(model_dir), **kwargs)
    if trainable:
        for backbone in backbone_models(model):
            if getattr(backbone, "_hf_peft_config_loaded", False):
                set_requires_grad(backbone, list(backbone.peft_config), requires_grad=True)
    return model


def _looks_local(name_or_path: str) -> bool:
    """A filesystem path rather than a hub id (``name`` or ``namespace/name``)."""
    return os.path.isabs(name_or_path) or name_or_path.startswith((".", "~")) or name_or_path.count("/") > 1
