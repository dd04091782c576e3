"""Finding the transformers models inside a Sentence Transformers model, whatever module wraps them."""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn
from transformers import PreTrainedModel

__all__ = ["backbone_models", "hidden_layers"]


def backbone_models(model: nn.Module) -> list[PreTrainedModel]:
    """Every transformers model that ``model`` holds as a module's ``.model`` or ``.auto_model``.

    This covers Sentence Transformers' ``Transformer``, :class:`~st_contrast.modules.FlashTransformer`,
    any other module that keeps its backbone in one of those attributes, and both towers of a
    ``Router``. A bare ``PreTrainedModel`` returns itself.

    Args:
        model: A ``SentenceTransformer``, one of its modules, or a transformers model.

    Returns:
        The distinct backbones, in module order.

    Example:
        ::

            from st_contrast.adapters import backbone_models

            (backbone,) = backbone_models(model)  # the BertModel inside all-MiniLM-L6-v2
    """
    if isinstance(model, PreTrainedModel):
        return [model]
    found: dict[int, PreTrainedModel] = {}
    for module in model.modules():
        for attribute in ("model", "auto_model"):
            candidate = getattr(module, attribute, None)
            if isinstance(candidate, PreTrainedModel):
                found.setdefault(id(candidate), candidate)
    if not found:
        raise ValueError(
            f"{type(model).__name__} holds no transformers model: adapters need a module whose `.model` or "
            "`.auto_model` is a transformers PreTrainedModel (e.g. Transformer or FlashTransformer)."
        )
    return list(found.values())


def hidden_layers(backbone: PreTrainedModel) -> nn.ModuleList:
    """The backbone's stack of transformer blocks (``encoder.layer`` for BERT, ``layers`` for Llama...).

    It is the ``ModuleList`` whose length is ``config.num_hidden_layers``, found by structure so
    that new architectures need no table entry.

    Args:
        backbone: A transformers model.

    Returns:
        The ``nn.ModuleList`` of blocks, first block first.
    """
    expected = getattr(backbone.config, "num_hidden_layers", None)
    candidates = [module for module in _module_lists(backbone) if len(module) == expected]
    if not candidates:
        raise ValueError(
            f"Found no list of {expected} layers in {type(backbone).__name__} (config.num_hidden_layers); "
            "lock the blocks you want frozen with `lock(module)` instead."
        )
    return candidates[0]


def _module_lists(backbone: PreTrainedModel) -> Iterator[nn.ModuleList]:
    for module in backbone.modules():
        if isinstance(module, nn.ModuleList):
            yield module
