"""Freezing parts of a backbone, and locking whole towers (LiT, Zhai et al., 2022)."""

from __future__ import annotations

from types import MethodType

from torch import nn

from st_contrast.adapters.parameters import ParameterCount, count_parameters
from st_contrast.modules.backbones import backbone_models, hidden_layers

__all__ = ["freeze", "lock"]


def freeze(model: nn.Module, *, embeddings: bool = False, layers: int = 0) -> ParameterCount:
    """Freeze the embeddings and/or the first ``layers`` transformer blocks of every backbone in ``model``.

    Lower layers hold general features; freezing them saves optimizer memory and steadies
    small-data fine-tuning. Parameters not named here keep their ``requires_grad``.

    Args:
        model: A ``SentenceTransformer`` (or any module holding transformers backbones).
        embeddings: Freeze the embedding block (``embeddings`` for BERT-style encoders, word embeddings
            for decoders).
        layers: Freeze the first ``layers`` transformer blocks (``0 <= layers <= num_hidden_layers``).

    Returns:
        The resulting :class:`~st_contrast.adapters.ParameterCount`.

    Example:
        ::

            from st_contrast.adapters import freeze

            print(freeze(model, embeddings=True, layers=3))  # train the top half of a 6-layer MiniLM
    """
    for backbone in backbone_models(model):
        blocks = hidden_layers(backbone)
        if not 0 <= layers <= len(blocks):
            raise ValueError(
                f"layers={layers} is out of range: {type(backbone).__name__} has {len(blocks)} layers; "
                f"pass 0 to {len(blocks)}."
            )
        frozen: list[nn.Module] = list(blocks[:layers])
        if embeddings:
            block = getattr(backbone, "embeddings", None)
            frozen.append(block if isinstance(block, nn.Module) else backbone.get_input_embeddings())
        for module in frozen:
            module.requires_grad_(False)
    return count_parameters(model)


def lock(module: nn.Module) -> nn.Module:
    """Lock ``module``: freeze all its parameters and keep it in eval mode, even under ``model.train()``.

    "Locked-image tuning" (Zhai et al., 2022, "LiT: Zero-Shot Transfer with Locked-image text
    Tuning", CVPR) trains one tower of a two-tower model against a locked pretrained other tower.
    Locking keeps dropout off in the locked tower, so its outputs are deterministic targets.
    Use it on a whole ``SentenceTransformer``, one of its modules (e.g. one route of a ``Router``),
    or any submodule. Locking is a training-time setting: it is not saved with the model.

    Args:
        module: The module to lock.

    Returns:
        ``module``, locked.

    Example:
        ::

            from st_contrast.adapters import lock

            lock(model[0].sub_modules["document"])  # train only the query tower
    """
    module.requires_grad_(False)
    module.train = MethodType(_train_locked, module)  # the parent's train() calls this on its children
    module.eval()
    return module


def _train_locked(module: nn.Module, mode: bool = True) -> nn.Module:
    """``train(mode)`` of a locked module: always eval mode."""
    return nn.Module.train(module, False)
