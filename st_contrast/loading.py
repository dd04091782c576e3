"""Reloading saved models whose modules come from ``st_contrast``, without trusting remote code."""

from __future__ import annotations

from typing import Any, TypeVar

from sentence_transformers import SentenceTransformer

from st_contrast.modules import (
    BidirectionalFlashTransformer,
    BidirectionalTransformer,
    FlashTransformer,
    InstructionPooling,
    LogitScale,
)

__all__ = ["MODULE_CLASSES", "load_model"]

ModelT = TypeVar("ModelT", bound=SentenceTransformer)

MODULE_CLASSES: tuple[type, ...] = (
    FlashTransformer,
    LogitScale,
    BidirectionalTransformer,
    BidirectionalFlashTransformer,
    InstructionPooling,
)
"""Every module class a saved ``st_contrast`` model may name in its ``modules.json``."""


def load_model(model_name_or_path: str, *, model_class: type[ModelT] = SentenceTransformer, **kwargs: Any) -> ModelT:
    """Load a saved model that uses ``st_contrast`` modules, keeping ``trust_remote_code=False``.

    Sentence Transformers 6 refuses module classes outside its own namespace unless
    ``trust_remote_code=True``, and that flag also lets the backbone's config run repository code.
    This loader hands Sentence Transformers the already imported ``st_contrast`` classes (the
    mechanism its trainer uses to reload its own checkpoints); every other class reference and the
    backbone keep the normal checks, so ``trust_remote_code`` stays whatever you pass (default False).

    Args:
        model_name_or_path: A directory written by ``model.save(...)`` or a hub id.
        model_class: ``SentenceTransformer`` (default) or another Sentence Transformers model class.
        **kwargs: Forwarded to the model class (``device``, ``model_kwargs``, ``trust_remote_code``...).

    Example:
        ::

            import st_contrast

            model = st_contrast.load_model("output/my-flash-model", device="cpu")
    """
    loader = getattr(model_class, "_load_with_module_classes", None)
    if loader is None:
        raise RuntimeError(
            f"This sentence-transformers version has no {model_class.__name__}._load_with_module_classes; "
            f"load with {model_class.__name__}({model_name_or_path!r}, trust_remote_code=True) instead, "
            "after checking that the model directory holds no code you do not trust."
        )
    from st_contrast.adapters.saving import check_adapter_bases

    check_adapter_bases(model_name_or_path)  # a clear error when a saved adapter's base model is gone
    module_classes = {f"{cls.__module__}.{cls.__name__}": cls for cls in MODULE_CLASSES}
    return loader(model_name_or_path, module_classes, **kwargs)
