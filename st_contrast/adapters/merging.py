"""Folding LoRA adapters into the base weights and saving a standalone model."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils.other import AuxiliaryTrainingWrapper
from sentence_transformers import SentenceTransformer
from torch import nn

from st_contrast.compat import forget_peft_adapters, has_peft_adapters
from st_contrast.modules.backbones import backbone_models

__all__ = ["merge_and_save", "merge_lora"]


def merge_lora(model: SentenceTransformer) -> SentenceTransformer:
    """Fold every LoRA adapter of ``model`` into its base weights, in place, and drop the adapters.

    Each peft layer merges its active adapter into the wrapped ``nn.Linear`` (``W + scale * B @ A``)
    and is replaced by that linear layer, and each module a ``LoraConfig`` trains whole (``modules_to_save``) by
    its trained copy; the backbones then carry no peft state, so ``model.save(...)`` writes full weights.

    Args:
        model: A ``SentenceTransformer`` whose backbones have adapters (see :func:`add_lora`).

    Returns:
        ``model``, now without adapters.

    Example:
        ::

            from st_contrast.adapters import merge_lora

            merge_lora(model)  # same embeddings, plain linear layers
    """
    merged = 0
    for backbone in backbone_models(model):
        # A LoraConfig's modules_to_save (and trainable_tokens) wrap whole modules: each becomes its trained copy.
        merged += _replace(backbone, AuxiliaryTrainingWrapper, lambda wrapper: _unload(wrapper))
        merged += _replace(backbone, BaseTunerLayer, lambda layer: layer.merge() or layer.get_base_layer())
        if has_peft_adapters(backbone):
            forget_peft_adapters(backbone)
    if not merged:
        raise ValueError("The model has no LoRA adapters to merge; add one with add_lora(model) or load an adapter.")
    return model


def _replace(backbone: nn.Module, kind: type, unwrap: Callable[[nn.Module], nn.Module]) -> int:
    """Replace every outermost ``kind`` module of ``backbone`` by ``unwrap(module)``; returns how many."""
    names = [name for name, module in backbone.named_modules() if isinstance(module, kind)]
    outermost = [name for name in names if not any(name.startswith(other + ".") for other in names)]
    for name in outermost:
        parent_name, _, child_name = name.rpartition(".")
        setattr(backbone.get_submodule(parent_name), child_name, unwrap(backbone.get_submodule(name)))
    return len(outermost)


def _unload(wrapper: AuxiliaryTrainingWrapper) -> nn.Module:
    """peft's own unloading of a wrapper: the active adapter's trained copy (modules_to_save), merged tokens
    (trainable_tokens), or the original module when its adapter is not active."""
    return wrapper.unload_and_optionally_merge_module(merge=True, safe_merge=False, adapter_names=None)


def merge_and_save(model: SentenceTransformer, out_dir: str | Path, *, inplace: bool = False) -> str:
    """Save ``model`` with its LoRA adapters merged, as a standalone model that needs neither peft nor the base.

    The saved directory loads with ``SentenceTransformer(out_dir)``, or ``st_contrast.load_model(out_dir)``
    when it has ``st_contrast`` modules, and gives the adapter model's embeddings. Every parameter
    becomes trainable again in the saved model (``requires_grad`` is not saved).

    Args:
        model: A ``SentenceTransformer`` with LoRA adapters.
        out_dir: Directory to save to.
        inplace: Merge ``model`` itself instead of a copy (saves memory; ``model`` loses its adapters).

    Returns:
        ``out_dir`` as a string.

    Example:
        ::

            from sentence_transformers import SentenceTransformer
            from st_contrast.adapters import merge_and_save

            merge_and_save(model, "output/minilm-merged")
            standalone = SentenceTransformer("output/minilm-merged")
    """
    target = model if inplace else copy.deepcopy(model)
    merge_lora(target)
    target.save(str(out_dir))
    return str(out_dir)
