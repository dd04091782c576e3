"""Multi-dataset batch sampler whose every global batch (all ranks, one step) comes from a single dataset."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from sentence_transformers.base.sampler import MultiDatasetDefaultBatchSampler
from torch.utils.data import BatchSampler, ConcatDataset
from transformers import TrainerCallback
from transformers.utils import logging

from st_contrast.compat import SAMPLER_WRAPPER_ATTRIBUTES, accelerate_state_exists
from st_contrast.data.allocation import allocate_batches

__all__ = [
    "SamplerEpochCallback",
    "SingleDatasetBatchSampler",
    "resolve_world_size",
    "set_sampler_epoch",
]

logger = logging.get_logger(__name__)


def resolve_world_size(world_size: int | None = None) -> int:
    """``world_size`` if given, else torch.distributed's world size, else accelerate's ``PartialState``, else 1."""
    if world_size is not None:
        if world_size < 1:
            raise ValueError(f"world_size must be >= 1, got {world_size}.")
        return int(world_size)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    if accelerate_state_exists():  # only read a state someone created: never initialise one here
        from accelerate.state import PartialState

        return int(PartialState().num_processes)
    return 1


class SingleDatasetBatchSampler(MultiDatasetDefaultBatchSampler):
    """Batches from several datasets where each global batch comes from one dataset, the same on every rank.

    Contrastive in-batch negatives must not mix tasks. Under ``accelerate`` (which ``SentenceTransformerTrainer``
    uses), rank ``r`` of ``W`` receives batches ``r, r+W, r+2W, ...`` of this sampler, so it emits the batches in
    groups of ``W`` consecutive batches from the same dataset: at every step all ranks train on one dataset, each on
    different rows. The batches of a group also have equal sizes, which ``gather_across_devices`` needs.

    Which dataset each group comes from is shuffled, with each dataset's number of groups proportional to its size
    (all rows used once per epoch, like ST's ``ProportionalBatchSampler``) or, with ``weights``, the same total
    number of groups split in proportion to the weights (a dataset that needs more batches than one pass gives
    starts another pass; one that needs fewer is cut). The order depends only on ``seed`` and the epoch
    (``set_epoch``), so every rank computes the same order and a resumed run (the trainer skips the batches already
    trained) reproduces it.

    Pass the class as ``multi_dataset_batch_sampler`` of ``SentenceTransformerTrainingArguments``, or with options
    through ``functools.partial(SingleDatasetBatchSampler, weights=[...])``.

    Args:
        dataset: The concatenated datasets (ST builds it from the ``DatasetDict``).
        batch_samplers: One batch sampler per dataset (``batch_sampler`` of the training arguments).
        generator: ST's shared generator, reseeded with ``seed + epoch`` on every pass as ST's samplers do.
        seed: Seed of the dataset order.
        world_size: Ranks that share a step; default: from torch.distributed or accelerate, else 1. Set it to
            ``world_size * gradient_accumulation_steps`` to keep a whole optimizer step on one dataset.
        weights: Relative sampling weight per dataset (in ``DatasetDict`` order), or ``None`` (proportional).

    Note:
        Each dataset contributes only whole groups: up to ``W - 1`` batches per dataset and epoch (with weights: per
        pass, as a group never spans two passes) are left out, a dataset with fewer than ``W`` batches is not
        trained on (with or without weights), and a group whose batches differ in size (a dataset's last, short
        batch) is cut to its smallest batch. So the ranks of a step never share rows. This
        sampler reports ``batch_size = None`` so that accelerate yields its variable-size batches unchanged.
    """

    def __init__(
        self,
        dataset: ConcatDataset,
        batch_samplers: list[BatchSampler],
        generator: torch.Generator | None = None,
        seed: int = 0,
        world_size: int | None = None,
        weights: Sequence[float] | None = None,
    ) -> None:
        if len(dataset.datasets) != len(batch_samplers):
            raise ValueError("The number of batch samplers must match the number of datasets in the ConcatDataset.")
        # Not MultiDatasetDefaultBatchSampler.__init__: it would pass the first sampler's batch_size, None for
        # variable-size samplers, to torch's BatchSampler, which refuses it. Same attributes, set here.
        BatchSampler.__init__(self, dataset, batch_size=1, drop_last=bool(getattr(batch_samplers[0], "drop_last", 0)))
        self.epoch = 0
        self.dataset = dataset
        self.batch_samplers = batch_samplers
        self.generator = generator
        self.seed = 0 if seed is None else seed
        self.world_size = resolve_world_size(world_size)
        # accelerate's BatchSamplerShard drops a group whose last batch is not `batch_size` long: report None.
        self.batch_size = None
        if weights is not None:
            weights = [float(weight) for weight in weights]
            if len(weights) != len(batch_samplers) or not all(weight > 0 for weight in weights):
                raise ValueError(
                    f"weights must be {len(batch_samplers)} positive numbers (one per dataset), got {weights}."
                )
        self.weights = weights
        self._groups = [len(sampler) // self.world_size for sampler in batch_samplers]
        if sum(self._groups) == 0:
            raise ValueError(
                f"No dataset has {self.world_size} batches (one per rank): lower the batch size or add data."
            )
        empty = [i for i, groups in enumerate(self._groups) if groups == 0]
        if empty:  # with weights too: a group of its one batch would give every rank the same rows
            logger.warning(
                f"Dataset(s) {empty} have fewer than {self.world_size} batches (one per rank) and are not trained on."
            )
        if weights is None:
            self.groups_per_dataset = self._groups
        else:
            usable = [weight if groups else 0.0 for weight, groups in zip(weights, self._groups, strict=True)]
            self.groups_per_dataset = allocate_batches(sum(self._groups), usable)

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch here and on every per-dataset sampler (ST's seeded samplers reseed from their own epoch;
        sentence-transformers < 6.2 did not pass it on, so each dataset repeated its first epoch's order)."""
        self.epoch = epoch
        for sampler in self.batch_samplers:
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return sum(self.groups_per_dataset) * self.world_size

    def dataset_order(self) -> list[int]:
        """The dataset of each group (of ``world_size`` consecutive batches) in this epoch."""
        rng = np.random.default_rng([self.seed, self.epoch, 0x5D])
        order = np.repeat(np.arange(len(self.groups_per_dataset)), self.groups_per_dataset)
        return rng.permutation(order).tolist()

    def __iter__(self) -> Iterator[list[int]]:
        if self.generator is not None:
            self.generator.manual_seed(self.seed + self.epoch)
        offsets = np.concatenate([[0], np.cumsum([len(part) for part in self.dataset.datasets])]).tolist()
        iterators: dict[int, Iterator[list[int]]] = {}
        for index in self.dataset_order():
            group = self._next_group(index, iterators)
            if group is None:
                continue
            size = min(len(batch) for batch in group)
            if size == 0:
                continue
            if any(len(batch) != size for batch in group):
                logger.info(f"Cutting a group of dataset {index} to {size} rows per rank (uneven last batches).")
            for batch in group:
                yield [offsets[index] + int(row) for row in batch[:size]]

    def _next_group(self, index: int, iterators: dict[int, Iterator[list[int]]]) -> list[list[int]] | None:
        """The next ``world_size`` batches of dataset ``index``, all from one pass over it, or None.

        With weights a dataset may need another pass; a group is never split across two passes (the batches of one
        pass hold distinct rows, those of two passes need not), so the batches a pass has left that cannot fill a
        group are not used.
        """
        for attempt in range(2):
            if index not in iterators:
                iterators[index] = iter(self.batch_samplers[index])
            group = [list(batch) for batch in itertools.islice(iterators[index], self.world_size)]
            if len(group) == self.world_size:
                return group
            del iterators[index]  # exhausted
            if attempt == 0 and self.weights is None:
                return None
        return None


def set_sampler_epoch(obj: object, epoch: int) -> int:
    """Call ``set_epoch(epoch)`` on every batch sampler reachable from ``obj`` (a data loader or sampler wrapper).

    Follows ``batch_sampler`` / ``sampler`` attributes through accelerate's and the trainer's wrappers; returns the
    number of samplers set.
    """
    seen: set[int] = set()
    count = 0
    stack = [obj]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, (SingleDatasetBatchSampler, MultiDatasetDefaultBatchSampler)) or (
            isinstance(current, BatchSampler) and hasattr(current, "set_epoch")
        ):
            current.set_epoch(epoch)
            count += 1
        for name in SAMPLER_WRAPPER_ATTRIBUTES:
            child = getattr(current, name, None)
            if child is not None and not isinstance(child, (torch.utils.data.Dataset, list)):
                stack.append(child)
    return count


class SamplerEpochCallback(TrainerCallback):
    """Sets the epoch of the training batch sampler at every epoch, also when resuming on several ranks.

    When a run resumes from a checkpoint mid-epoch, transformers' ``Trainer`` wraps the data loader's sampler in
    accelerate's ``SkipBatchSampler(BatchSamplerShard(sampler))``, through which its ``set_epoch`` call no longer
    reaches ``sampler`` on more than one process: the resumed epoch would replay epoch 0's order. This callback
    reaches it (add it with ``trainer.add_callback(SamplerEpochCallback())``), so a resumed run continues the
    interrupted epoch's order exactly. One process is not affected, and the callback is harmless there.
    """

    def on_epoch_begin(self, args, state, control, train_dataloader=None, **kwargs):
        if train_dataloader is not None:
            set_sampler_epoch(train_dataloader, int(math.floor(state.epoch + 1e-9)))
        return control
