"""Sentence Transformers' ``Pooling`` that leaves out per-row instruction tokens, padded or packed."""

from __future__ import annotations

from typing import Any

import torch
from sentence_transformers.sentence_transformer.modules import Pooling
from torch import Tensor

from st_contrast.compat import pool_flattened, pool_padded

__all__ = ["InstructionPooling"]


class InstructionPooling(Pooling):
    """``Pooling`` over the text tokens only, with instruction boundaries that may differ per row.

    Sentence Transformers' ``Pooling(include_prompt=False)`` drops one ``prompt_length`` measured by
    tokenizing the prompt alone, the same count for every row. When the prompt and the text are
    tokenized together (BPE merges across the boundary, or a prompt ending in a space), the true
    boundary can differ per row. :class:`~st_contrast.modules.BidirectionalTransformer` marks each
    row's instruction tokens in ``instruction_mask``; this module removes them and then runs
    Sentence Transformers' own pooling code on what is left, for padded (left or right) and packed
    (``cu_seq_lens_q``) inputs alike. Without ``instruction_mask`` (or with ``include_prompt=True``)
    it is exactly ``Pooling``.

    With the instruction excluded, ``weightedmean`` weights count from the first text token
    (1, 2, ...), and ``lasttoken`` / ``cls`` take the last / first text token.

    Args:
        embedding_dimension: Token embedding size.
        pooling_mode: Any ``Pooling`` mode or tuple of modes (``"mean"``, ``"weightedmean"``, ``"lasttoken"``...).
        include_prompt: ``False`` (default) leaves the instruction out; ``True`` pools it too.

    Example:
        ::

            from st_contrast.modules import BidirectionalTransformer, InstructionPooling

            backbone = BidirectionalTransformer("Qwen/Qwen2-0.5B")
            pooling = InstructionPooling(backbone.get_embedding_dimension(), "mean")
    """

    def __init__(
        self, embedding_dimension: int, pooling_mode: Any = "mean", include_prompt: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(embedding_dimension, pooling_mode=pooling_mode, include_prompt=include_prompt, **kwargs)

    def forward(self, features: dict[str, Tensor | Any], **kwargs) -> dict[str, Tensor | Any]:
        instruction_mask = features.get("instruction_mask")
        if instruction_mask is None or self.include_prompt:
            return super().forward(features, **kwargs)
        token_embeddings = features["token_embeddings"]
        keep = instruction_mask.to(token_embeddings.device) == 0
        if "cu_seq_lens_q" in features:
            vectors = self._pool_packed(token_embeddings, features, keep)
        else:
            attention_mask = features.get("attention_mask")
            if attention_mask is None:
                attention_mask = torch.ones_like(keep, dtype=torch.long)
            kept = attention_mask * keep
            if (kept.sum(dim=1) == 0).any():
                raise ValueError("A row has no token left to pool once its instruction is excluded.")
            vectors = pool_padded(self, token_embeddings, kept, {})
        features["sentence_embedding"] = torch.cat(vectors, dim=-1)
        return features

    def _pool_packed(self, token_embeddings: Tensor, features: dict[str, Any], keep: Tensor) -> list[Tensor]:
        cu_seq_lens = features["cu_seq_lens_q"].to(token_embeddings.device)
        lengths = cu_seq_lens.diff()
        keep = keep.reshape(-1)
        sequence = torch.repeat_interleave(torch.arange(len(lengths), device=keep.device), lengths)
        counts = torch.bincount(sequence[keep], minlength=len(lengths))
        if (counts == 0).any():
            raise ValueError("A row has no token left to pool once its instruction is excluded.")
        kept_cu = torch.nn.functional.pad(counts.cumsum(0), (1, 0)).to(cu_seq_lens.dtype)
        embeddings = token_embeddings.reshape(-1, token_embeddings.shape[-1])[keep].unsqueeze(0)
        return pool_flattened(self, embeddings, {"cu_seq_lens_q": kept_cu})
