"""Turn an existing Sentence Transformers model's padded backbone into a packed FlashTransformer."""

from __future__ import annotations

from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Transformer

from st_contrast.modules import FlashTransformer

__all__ = ["to_flash"]


def to_flash(model: SentenceTransformer, attention_backend: str = "auto") -> SentenceTransformer:
    """Replace every stock ``Transformer`` module of ``model`` with an equivalent :class:`FlashTransformer`, in place.

    Each module changes class in place (:meth:`FlashTransformer.from_transformer`), so weights,
    tokenizer, ``max_seq_length``, processing settings, device and dtype carry over, and it works in
    an already initialised distributed run. Everything else in the pipeline (pooling, normalization, prompts)
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
    for module in model.children():
        if type(module) is Transformer:
            FlashTransformer.from_transformer(module, attention_backend)
            replaced += 1
    if not replaced:
        found = ", ".join(type(module).__name__ for module in model.children())
        raise ValueError(f"to_flash found no sentence_transformers Transformer module to convert (modules: {found}).")
    return model
