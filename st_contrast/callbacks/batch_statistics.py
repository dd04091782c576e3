"""Samples and real (non-padding) tokens of the batches Sentence Transformers' collator builds.

ST's ``BaseDataCollator`` tokenizes every text column into ``{column}_input_ids`` plus either
``{column}_attention_mask`` (padded backbones such as ``Transformer``) or ``{column}_cu_seq_lens_q``
(packed backbones: :class:`~st_contrast.modules.FlashTransformer`, ST with ``flash_attn``), and adds
``dataset_name`` when it trains on several datasets. A row of the batch is one sample (an anchor with
its positive and negatives); its tokens are those of all its columns.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

logger = logging.getLogger(__name__)

__all__ = ["BatchStats", "batch_stats", "sequence_lengths"]

_INPUT_IDS = "_input_ids"
_warned: set[str] = set()


def sequence_lengths(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Per text column, the real length of each sequence (a 1-D tensor, on the batch's device).

    Packed columns use ``cu_seq_lens_q`` differences; padded ones the attention-mask row sums; a column
    with neither counts every position as real (and warns once).
    """
    lengths: dict[str, torch.Tensor] = {}
    for key, value in batch.items():
        if not key.endswith(_INPUT_IDS) or not isinstance(value, torch.Tensor):
            continue
        column = key[: -len(_INPUT_IDS)]
        cu_seqlens = batch.get(f"{column}_cu_seq_lens_q")
        mask = batch.get(f"{column}_attention_mask")
        if isinstance(cu_seqlens, torch.Tensor):
            lengths[column] = cu_seqlens[1:] - cu_seqlens[:-1]
        elif isinstance(mask, torch.Tensor):
            lengths[column] = mask.sum(dim=-1)
        else:
            if column not in _warned:
                _warned.add(column)
                logger.warning(
                    "Column %r has neither an attention mask nor cu_seq_lens_q: counting all its %s positions "
                    "as real tokens.",
                    column,
                    tuple(value.shape),
                )
            lengths[column] = torch.full((value.shape[0],), value.shape[-1], device=value.device)
    return lengths


@dataclass
class BatchStats:
    """Counts of one collated batch; the token sums stay on the batch's device (no host sync)."""

    samples: int
    tokens: torch.Tensor
    sum_squared_lengths: torch.Tensor
    dataset_name: str | None


def batch_stats(batch: dict[str, Any]) -> BatchStats | None:
    """Samples, real tokens and the sum of squared sequence lengths of a collated ST batch.

    Returns None when the batch has no tokenized text column (e.g. image-only inputs).
    """
    lengths = sequence_lengths(batch)
    if not lengths:
        return None
    samples = max(int(column_lengths.numel()) for column_lengths in lengths.values())
    stacked = torch.cat([column_lengths.reshape(-1).to(torch.int64) for column_lengths in lengths.values()])
    dataset_name = batch.get("dataset_name")
    return BatchStats(
        samples=samples,
        tokens=stacked.sum(),
        sum_squared_lengths=(stacked * stacked).sum(),
        dataset_name=dataset_name if isinstance(dataset_name, str) else None,
    )
