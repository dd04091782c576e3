"""Turn an existing Sentence Transformers model's padded backbone into a packed FlashTransformer."""

from __future__ import annotations

import tempfile

from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Transformer

from st_contrast.modules import FlashTransformer

__all__ = ["to_flash"]


def to_flash(model: SentenceTransformer, attention_backend: str = "auto") -> SentenceTransformer:
    """Replace every stock ``Transformer`` module of ``model`` with an equivalent :class:`FlashTransformer`, in place.

    Weights, tokenizer, ``max_seq_length`` and the module's processing settings carry over (the
    module is round-tripped through its own ``save`` / ``load``), and the new module lands on the
    old one's device and dtype. Everything else in the pipeline (pooling, normalization, prompts)
    is untouched, so ``model.encode`` gives the same embeddings, without computing on padding.

    Args:
        model: A loaded model, e.g. ``SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2")``.
        attention_backend: The FlashTransformer backend (``"auto"``, ``"varlen"``, ``"flash_attn"``, ``"cpu"``).

    Returns:
        The same ``model`` object, for chaining.

    Example:
        ::

            from sentence_transformers import SentenceTransformer
            from st_contrast import to_flash

            model = to_flash(SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2"))
    """
    replaced = 0
    for name, module in list(model.named_children()):
        if type(module) is not Transformer:
            continue
        parameter = next(module.parameters())
        with tempfile.TemporaryDirectory() as directory:
            module.save(directory)
            flash = FlashTransformer.load(directory)
        flash.attention_backend = attention_backend
        model._modules[name] = flash.to(device=parameter.device, dtype=parameter.dtype)
        replaced += 1
    if not replaced:
        found = ", ".join(type(module).__name__ for module in model.children())
        raise ValueError(f"to_flash found no sentence_transformers Transformer module to convert (modules: {found}).")
    return model
