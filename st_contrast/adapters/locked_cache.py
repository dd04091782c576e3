"""Embeddings of a locked tower computed once per distinct input (LiT's precomputed locked tower)."""

from __future__ import annotations

from types import MethodType
from typing import Any

import torch
from torch import nn

__all__ = ["cache_locked_embeddings"]

_KEYS = ("input_ids", "attention_mask", "token_type_ids")


def cache_locked_embeddings(router: nn.Module, route: str, max_entries: int = 100_000) -> nn.Module:
    """Memoise the ``sentence_embedding`` of a locked text tower behind a modality ``Router``, exactly.

    A locked tower (:func:`~st_contrast.adapters.lock`: frozen, always in eval mode) maps a text to the same
    embedding every time, so LiT computes it once. Image-text data repeats captions (every digit "seven" has the
    caption "a handwritten digit seven"); with the cache each distinct caption runs through the tower once per run,
    and the rows of a batch already seen come from memory (the others are computed together). Rows are keyed by
    their token ids without padding, so a hit is the same text. Like locking, the cache is a training-time setting
    of this module object and is not saved. At most ``max_entries`` rows are kept (then new rows are computed, not
    stored). Padded batches only: a packed tower's batch (one flattened row, no ``attention_mask``) runs uncached.

    Args:
        router: A Sentence Transformers ``Router`` whose ``route`` (named after its modality, e.g. ``"text"``) is
            locked and takes tokenized text (``input_ids`` / ``attention_mask``).
        route: The locked route.
        max_entries: The cache's size limit, in rows.

    Returns:
        ``router``, with its ``forward`` memoised for that route.

    Example:
        ::

            from st_contrast.adapters import cache_locked_embeddings, lock

            lock(model[0].sub_modules["text"])
            cache_locked_embeddings(model[0], "text")
    """
    tower = router.sub_modules[route]
    if any(parameter.requires_grad for parameter in tower.parameters()):
        raise ValueError(
            f"cache_locked_embeddings: the {route!r} tower has trainable parameters, so its embeddings change as "
            "it trains; lock it first (st_contrast.adapters.lock)."
        )
    cache: dict[bytes, torch.Tensor] = {}
    compute = router.forward

    def forward(self: nn.Module, features: dict[str, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        if features.get("modality") != route or "input_ids" not in features or "attention_mask" not in features:
            return compute(features, *args, **kwargs)
        mask = features["attention_mask"].bool()
        keys = [
            ids[row_mask].cpu().numpy().tobytes() for ids, row_mask in zip(features["input_ids"], mask, strict=True)
        ]
        new = [key for key in dict.fromkeys(keys) if key not in cache]
        computed: dict[bytes, torch.Tensor] = {}
        if new:
            rows = [keys.index(key) for key in new]
            subset = {
                name: value[rows] if name in _KEYS and torch.is_tensor(value) else value
                for name, value in features.items()
            }
            with torch.no_grad():
                embeddings = compute(subset, *args, **kwargs)["sentence_embedding"]
            computed = dict(zip(new, embeddings, strict=True))
            for key, embedding in computed.items():
                if len(cache) < max_entries:
                    cache[key] = embedding
        embeddings = torch.stack([cache[key] if key in cache else computed[key] for key in keys])
        embeddings = embeddings.to(features["input_ids"].device)
        return {**features, "sentence_embedding": embeddings}

    router.forward = MethodType(forward, router)
    return router
