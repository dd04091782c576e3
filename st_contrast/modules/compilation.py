"""``torch.compile`` for packed backbones, with one set of graphs for every batch shape.

A packed batch is one run of ``total_tokens`` tokens whose length, number of sequences and longest sequence change at
every step. Compiled naively, each new shape would recompile (and torch gives up after a few recompiles, silently
running eager). Here the backbone's transformers model is compiled with dynamic shapes (``dynamic=True``: the token
and sequence counts are symbolic from the first compile), and the packed attention kernel runs outside the graphs
(a graph break per attention layer; its ``cu_seqlens`` and ``max_len`` are data, not shapes): the projections, MLPs,
norms and embeddings around it are fused. One compile serves every batch; a mode change (training, evaluation,
``inference_mode``) compiles once more.
"""

from __future__ import annotations

from typing import Any

import torch
from sentence_transformers.base.modules import Transformer

from st_contrast.attention.interface import is_packed_implementation
from st_contrast.compat import attn_implementation

__all__ = ["compile_backbone", "is_compiled", "uncompile_backbone"]

_COMPILED = "_st_contrast_compiled"


def compile_backbone(module: Transformer, **options: Any) -> Transformer:
    """Compile the transformers model inside a packed ``Transformer`` module, in place.

    Nothing of it is saved: ``model.save`` writes the same plain Sentence Transformers model, and
    :func:`uncompile_backbone` (or :func:`~st_contrast.modules.disable_packing`) restores the eager forward.
    Apply adapters (LoRA, BitFit) before compiling.

    Args:
        module: A ``Transformer`` module packed with :func:`~st_contrast.modules.enable_packing`.
        **options: ``torch.compile`` arguments (``backend``, ``mode``, ``fullgraph``...); ``dynamic`` defaults to
            True (one compile for every packed shape).

    Returns:
        ``module``.
    """
    if not is_packed_implementation(attn_implementation(module.model.config)):
        raise ValueError(
            "compile_backbone compiles packed backbones (their shapes are made dynamic); pack the module first "
            "(FlashTransformer(..., compile=True) or enable_packing(module, compile=True)), or torch.compile a padded "
            "model yourself."
        )
    options.setdefault("dynamic", True)
    inner = module.model
    if getattr(inner, _COMPILED, None) is not None:
        uncompile_backbone(module)
    inner.forward = torch.compile(type(inner).forward.__get__(inner), **options)
    setattr(inner, _COMPILED, options)
    return module


def uncompile_backbone(module: Transformer) -> Transformer:
    """Run the module's transformers model eagerly again (undoes :func:`compile_backbone`)."""
    inner = module.model
    if getattr(inner, _COMPILED, None) is not None:
        del inner.forward  # the instance attribute set by compile_backbone; the class's forward shows again
        delattr(inner, _COMPILED)
    return module


def is_compiled(module: Transformer) -> bool:
    """Whether :func:`compile_backbone` compiled this module's transformers model."""
    return getattr(getattr(module, "model", None), _COMPILED, None) is not None
