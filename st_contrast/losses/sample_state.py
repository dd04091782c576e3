"""Per-sample loss state (GloFND thresholds, SogCLR/FastCLIP moving averages): index checks and rank sync."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["SAMPLE_INDEX_HELP", "check_sample_indices", "sample_state_in_use", "sync_rows", "without_sample_state"]

SAMPLE_INDEX_HELP = (
    "This loss keeps state per training sample, so every row must carry its index in the dataset: add it as "
    "the label column, e.g. dataset = dataset.add_column('label', list(range(len(dataset))))."
)

_STATE_OFF: ContextVar[bool] = ContextVar("st_contrast_sample_state_off", default=False)


@contextmanager
def without_sample_state() -> Iterator[None]:
    """Within it, losses with per-sample state neither read nor write that state and need no sample indices: they
    return their batch-only value (GlobalContrastiveLoss: ``u_i = g_i`` of the batch, the mean individual temperature
    for v2; GloFND: no false negatives removed). For rows that are not the training samples the state belongs to, such
    as an evaluation dataset's (:class:`~st_contrast.ContrastiveTrainer` evaluates that way)."""
    token = _STATE_OFF.set(True)
    try:
        yield
    finally:
        _STATE_OFF.reset(token)


def sample_state_in_use() -> bool:
    """False inside :func:`without_sample_state`."""
    return not _STATE_OFF.get()


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
    """Give every rank the rows ``indices`` of ``state`` that each rank updated (no-op without distribution).

    A sample updated on several ranks in the same step (a distributed sampler pads the last batches by repeating
    samples) gets the mean of their values (the maximum for integer or boolean state, such as update counts), the same
    on every rank whatever the rank order."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return
    indices = indices.unique()
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, (indices.cpu(), [tensor[indices].cpu() for tensor in state]))
    all_indices = torch.cat([rank_indices for rank_indices, _ in gathered])
    rows, owner = all_indices.unique(return_inverse=True)  # owner: each gathered value's row among ``rows``
    for position, tensor in enumerate(state):
        values = torch.cat([rank_values[position] for _, rank_values in gathered])
        tensor[rows.to(tensor.device)] = _combine(values, owner, len(rows)).to(tensor.device)


def _combine(values: Tensor, owner: Tensor, num_rows: int) -> Tensor:
    """One value per row from the values of every rank that updated it: their mean (maximum if not floating)."""
    shape = (num_rows, *values.shape[1:])
    if values.is_floating_point():
        sums = torch.zeros(shape, dtype=torch.float64).index_add_(0, owner, values.double())
        counts = torch.bincount(owner, minlength=num_rows).view(-1, *[1] * (values.dim() - 1))
        return (sums / counts).to(values.dtype)
    spread = owner.view(-1, *[1] * (values.dim() - 1)).expand_as(values)
    as_long = values.long()
    combined = torch.full(shape, torch.iinfo(torch.long).min, dtype=torch.long)
    return combined.scatter_reduce_(0, spread, as_long, "amax").to(values.dtype)
