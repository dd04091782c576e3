"""Packed outputs handed on in Sentence Transformers' padded layout where ``encode`` reads them.

A packed module outputs ``token_embeddings`` of shape ``[1, total_tokens, hidden]`` with ``cu_seq_lens_q``, which
ST's ``Pooling`` and GradCache losses consume directly. ``SentenceTransformer.encode(...,
output_value="token_embeddings")`` instead reads ``token_embeddings`` and ``attention_mask`` row by row, and
``output_value=None`` splits batch-first tensors. So during ``encode`` (which runs the model under
``torch.inference_mode``, see :func:`st_contrast.compat.in_encode`) a packed module's output is regrouped into that
layout: every per-token tensor becomes ``[batch, max_len, ...]`` (right padded, zeros in the padding) and
``attention_mask`` marks the real tokens. Everything downstream (Pooling in any mode, ``InstructionPooling``,
``encode``'s token and per-row outputs) then sees exactly what a padded module gives it; the transformer itself
still ran packed. Training and ``torch.no_grad`` forwards keep the packed outputs.
"""

from __future__ import annotations

from typing import Any

import torch

from st_contrast.attention.packing import PackedLayout
from st_contrast.compat import in_encode

__all__ = ["PACKING_KEYS", "padded_outputs_hook", "unpack_features"]

PACKING_KEYS = ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k", "seq_idx")
"""Features that describe a packed batch; they are dropped once the outputs are padded."""


def unpack_features(features: dict[str, Any]) -> dict[str, Any]:
    """Regroup a packed forward's features into the right-padded batch layout, in place.

    Args:
        features: A packed module's output (``cu_seq_lens_q`` and ``[1, total_tokens, ...]`` tensors).

    Returns:
        ``features``, with every per-token tensor (and each of ``all_layer_embeddings``) as ``[batch, max_len, ...]``,
        ``attention_mask`` added and the packing keys removed. Unpacked features are returned unchanged.

    Example:
        ::

            features = module.preprocess(["A short text.", "A somewhat longer text than that."])
            padded = unpack_features(module(features))  # token_embeddings [2, max_len, hidden] + attention_mask
    """
    cu_seqlens = features.get("cu_seq_lens_q")
    if cu_seqlens is None:
        return features
    total = int(cu_seqlens[-1])
    layout = PackedLayout(cu_seqlens, int(cu_seqlens.diff().max()))

    def pad(value: Any) -> Any:
        if isinstance(value, (tuple, list)):
            return type(value)(pad(item) for item in value)
        if not (torch.is_tensor(value) and value.ndim >= 2 and value.shape[0] == 1 and value.shape[1] == total):
            return value
        return layout.to_padded(value[0])  # zeros in the pad slots

    for key in PACKING_KEYS:
        features.pop(key, None)
    for key, value in list(features.items()):
        features[key] = pad(value)
    features["attention_mask"] = layout.valid.to(torch.long)
    return features


def padded_outputs_hook(module: torch.nn.Module, args: Any, output: Any) -> Any:
    """Forward hook of packed modules: :func:`unpack_features` on their output while ``encode`` runs them.

    :func:`~st_contrast.modules.enable_packing` registers it once per module; on a padded module (no
    ``cu_seq_lens_q`` in the output) and outside ``encode`` it returns the output unchanged.

    Args:
        module: The Sentence Transformers ``Transformer`` (unused).
        args: Its forward arguments (unused).
        output: Its output features.

    Example:
        ::

            module.register_forward_hook(padded_outputs_hook)  # what enable_packing(module) does
    """
    if isinstance(output, dict) and "cu_seq_lens_q" in output and in_encode():
        return unpack_features(output)
    return output
