"""Per-sample loss state (GloFND thresholds, SogCLR/FastCLIP moving averages): index checks and rank sync."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["SAMPLE_INDEX_HELP", "check_sample_indices", "sync_rows"]

SAMPLE_INDEX_HELP = (
    "This loss keeps state per training sample, so every row must carry its index in the dataset: add it as "
    "the label column, e.g. dataset = dataset.add_column('label', list(range(len(dataset))))."
)


def check_sample_indices(labels: Tensor | None, num_samples: int, device: torch.device) -> Tensor:
    """The batch's sample indices (the label column), or a clear error saying how to provide them."""
    if labels is None:
        raise ValueError(f"The batch has no label column. {SAMPLE_INDEX_HELP}")
    if labels.dtype.is_floating_point or labels.dim() != 1:
        raise ValueError(f"The labels are not 1-d integer sample indices ({labels.dtype}). {SAMPLE_INDEX_HELP}")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_samples):
        raise ValueError(
            f"Sample indices must lie in [0, {num_samples}); got {int(labels.min())}..{int(labels.max())}. "
            f"Set num_samples=len(train_dataset). {SAMPLE_INDEX_HELP}"
        )
    return labels.to(device)


@torch.no_grad()
def sync_rows(state: list[Tensor], indices: Tensor) -> None:
    """Give every rank the rows ``indices`` of ``state`` that each rank updated (no-op without distribution)."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return
    indices = indices.unique()
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, (indices.cpu(), [tensor[indices].cpu() for tensor in state]))
    for rank_indices, values in gathered:
        rank_indices = rank_indices.to(state[0].device)
        for tensor, value in zip(state, values, strict=True):
            tensor[rank_indices] = value.to(tensor.device)
