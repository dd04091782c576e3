"""One forward pass for every column of a packed batch.

Sentence Transformers' losses embed their columns (anchor, positive, negatives...) with ``embed_columns``, which
merges like-width padded columns into one forward and leaves the anchor on its own, since merging pads every row to
the widest column. It refuses packed (flattened) batches altogether, so a packed model runs one forward per column.
A packed batch has no width to pad to: its columns concatenate into one run of tokens at no cost, and one forward
of all of them makes fewer, larger matrix products, one embedding-gradient scatter instead of one per column, and on
GPUs a fraction of the kernel launches. The loss and gradients are the same, up to dropout sampling.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from st_contrast.compat import embed_columns as embed_columns_as_st_does

__all__ = ["embed_columns", "merge_packed_columns"]

_SEQUENCE_BOUNDARIES = ("cu_seq_lens_q", "cu_seq_lens_k")
_LONGEST = ("max_length_q", "max_length_k")


def embed_columns(model: nn.Module, features_list: Iterable[dict[str, Any]]) -> list[Tensor]:
    """One ``sentence_embedding`` tensor per column: every packed column in one forward, otherwise as ST does.

    Args:
        model: The Sentence Transformers model.
        features_list: One features dict per column (``model.preprocess`` output).

    Returns:
        The columns' ``[batch, dim]`` embeddings, in column order.

    Example:
        ::

            anchors, positives = embed_columns(model, [model.preprocess(queries), model.preprocess(documents)])
    """
    features_list = list(features_list)
    merged = merge_packed_columns(features_list) if len(features_list) > 1 else None
    if merged is None:
        return embed_columns_as_st_does(model, features_list)
    embeddings = model(merged)["sentence_embedding"]
    return list(embeddings.split([len(features["cu_seq_lens_q"]) - 1 for features in features_list]))


def merge_packed_columns(features_list: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Concatenate packed columns' features into one packed batch (column after column), or None.

    None when a column is not packed or the columns differ in anything but their tokens (other keys, another
    prompt, modality or router task): those run one forward each.

    Args:
        features_list: Packed features (``input_ids [1, tokens]``, ``cu_seq_lens_q``...), one dict per column.

    Returns:
        The features of one packed batch holding every column's sequences in order, or None.
    """
    first = features_list[0]
    if any("cu_seq_lens_q" not in features or features.keys() != first.keys() for features in features_list):
        return None
    tokens = [_token_count(features) for features in features_list]
    sequences = [len(features["cu_seq_lens_q"]) - 1 for features in features_list]
    token_starts = [sum(tokens[:index]) for index in range(len(tokens))]
    sequence_starts = [sum(sequences[:index]) for index in range(len(sequences))]
    merged: dict[str, Any] = {}
    for key, value in first.items():
        values = [features[key] for features in features_list]
        if key in _SEQUENCE_BOUNDARIES:  # each column's boundaries after the previous columns' tokens
            merged[key] = torch.cat(
                [values[0], *(v[1:] + start for v, start in zip(values[1:], token_starts[1:], strict=True))]
            )
        elif key in _LONGEST:
            merged[key] = max(values)
        elif key == "seq_idx":  # each token's sequence, numbered after the previous columns' sequences
            merged[key] = torch.cat([v + start for v, start in zip(values, sequence_starts, strict=True)], dim=1)
        elif _is_per_token(values, tokens):
            merged[key] = torch.cat(values, dim=1)
        elif _all_equal(values):
            merged[key] = value
        else:
            return None
    return merged


def _token_count(features: dict[str, Any]) -> int:
    """The column's packed tokens, from a shape where it can (no device sync), else from its boundaries."""
    ids = features.get("input_ids")
    return ids.shape[-1] if isinstance(ids, Tensor) and ids.ndim == 2 else int(features["cu_seq_lens_q"][-1])


def _is_per_token(values: list[Any], tokens: list[int]) -> bool:
    return all(
        isinstance(value, Tensor) and value.ndim >= 2 and value.shape[0] == 1 and value.shape[1] == count
        for value, count in zip(values, tokens, strict=True)
    )


def _all_equal(values: list[Any]) -> bool:
    first = values[0]
    try:
        if isinstance(first, Tensor):
            return all(isinstance(value, Tensor) and torch.equal(value, first) for value in values[1:])
        return all(bool(value == first) for value in values[1:])
    except (RuntimeError, ValueError, TypeError):
        return False
