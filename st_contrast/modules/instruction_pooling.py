"""Sentence Transformers' ``Pooling`` that leaves out per-row instruction tokens, padded or packed."""

from __future__ import annotations

from typing import Any

import torch
from sentence_transformers.sentence_transformer.modules import Pooling
from torch import Tensor

from st_contrast.compat import pool_flattened

__all__ = ["InstructionPooling"]


class InstructionPooling(Pooling):
    """``Pooling`` over the text tokens only, with instruction boundaries that may differ per row.

    Sentence Transformers' ``Pooling(include_prompt=False)`` drops one ``prompt_length`` measured by
    tokenizing the prompt alone, the same count for every row. When the prompt and the text are
    tokenized together (BPE merges across the boundary, or a prompt ending in a space), the true
    boundary can differ per row. :class:`~st_contrast.modules.BidirectionalTransformer` marks each
    row's instruction tokens in ``instruction_mask``; this module removes them and then runs
    Sentence Transformers' own pooling code (its packed-rows path) on what is left, for padded (left
    or right) and packed (``cu_seq_lens_q``) inputs alike. Without ``instruction_mask`` (or with
    ``include_prompt=True``) it pools every real token, as ``Pooling`` does; a stock backbone's
    ``prompt_length`` is left out as ``Pooling`` leaves it out.

    ``weightedmean`` weights count from each row's first pooled token (1, 2, ...) whatever the
    padding side: the first text token when the instruction is excluded. (Sentence Transformers'
    own padded pooling counted them from the padded row's start before 6.2, so left-padded rows
    got other weights.) ``lasttoken`` / ``cls`` take the last / first pooled token.

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
        if instruction_mask is None and not self.include_prompt and "prompt_length" in features:
            return super().forward(features, **kwargs)  # a stock backbone's prompt: ST's own count of its tokens
        token_embeddings = features["token_embeddings"]
        keep = torch.ones(token_embeddings.shape[:-1], dtype=torch.bool, device=token_embeddings.device)
        if instruction_mask is not None and not self.include_prompt:
            keep = instruction_mask.to(keep.device).reshape(keep.shape) == 0
        if "cu_seq_lens_q" in features:
            lengths = features["cu_seq_lens_q"].to(keep.device).diff()
        else:
            attention_mask = features.get("attention_mask")
            if attention_mask is not None and attention_mask.shape == keep.shape:
                keep = keep & (attention_mask.to(keep.device) != 0)
            lengths = None
        features["sentence_embedding"] = torch.cat(self._pool_kept(token_embeddings, keep, lengths), dim=-1)
        return features

    def _pool_kept(self, token_embeddings: Tensor, keep: Tensor, lengths: Tensor | None) -> list[Tensor]:
        """ST's flattened pooling of each row's kept tokens (``lengths``: the packed rows; None: one row per line)."""
        if lengths is None:
            counts = keep.sum(dim=1)
        else:
            sequence = torch.repeat_interleave(torch.arange(len(lengths), device=keep.device), lengths)
            counts = torch.bincount(sequence[keep.reshape(-1)], minlength=len(lengths))
        if (counts == 0).any():
            raise ValueError("A row has no token left to pool once its instruction is excluded.")
        kept_cu = torch.nn.functional.pad(counts.cumsum(0), (1, 0))
        embeddings = token_embeddings.reshape(-1, token_embeddings.shape[-1])[keep.reshape(-1)].unsqueeze(0)
        return pool_flattened(self, embeddings, {"cu_seq_lens_q": kept_cu})
