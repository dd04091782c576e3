"""Training on a :class:`~st_contrast.data.StreamingDataset`: its loader, and its position in every checkpoint.

Each rank writes ``stream_state_<rank>.json`` (the epoch and step of the mixture, and per dataset the pass, the
window with its first shard and row, the rows of it consumed, the pending rows, the skipped-row counts) into the
staged checkpoint before the checkpoint is committed; a resumed run restores it and continues with the next unseen
row. The stream restores its own position, so the trainer does not skip batches by reading them again
(``ignore_data_skip``): the resumed epoch is run as the rest of the epoch (:func:`rest_of_epoch`), so that its
optimizer steps take the batches an uninterrupted run's take, and the epoch in the logs is recomputed from the step.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from transformers import TrainerCallback

from st_contrast.data.columns import DataError
from st_contrast.data.streaming import StreamingDataset

__all__ = [
    "StreamEpochCallback",
    "configure_stream",
    "rest_of_epoch",
    "restore_stream_state",
    "save_stream_state",
    "stream_dataloader",
    "stream_state_name",
]

logger = logging.getLogger(__name__)

_NO_DUPLICATES = ("no_duplicates", "no_duplicates_hashed")


def stream_state_name(rank: int) -> str:
    return f"stream_state_{rank}.json"


def configure_stream(dataset: StreamingDataset, args: Any) -> None:
    """Set the stream's batch size, seed and ranks from the training arguments, refusing what it cannot do."""
    sampler = getattr(args.batch_sampler, "value", args.batch_sampler)
    if not isinstance(sampler, str) or sampler not in ("batch_sampler", *_NO_DUPLICATES):
        raise ValueError(
            f"Streamed datasets batch themselves (one dataset per step, no duplicates within a batch); the batch "
            f"sampler {sampler!r} needs the whole dataset. Use batch_sampler 'no_duplicates' or 'batch_sampler'."
        )
    if args.dataloader_num_workers:
        raise ValueError(
            "Streamed datasets read in a background thread and keep their position in the training process: set "
            "dataloader_num_workers to 0."
        )
    dataset.configure(
        batch_size=args.per_device_train_batch_size,
        seed=args.seed,
        world_size=args.world_size,
        rank=args.process_index,
        no_duplicates=sampler in _NO_DUPLICATES,
    )
    if not args.ignore_data_skip:
        logger.info("A streamed dataset restores its own position on resume: the trainer skips no batches.")
        args.ignore_data_skip = True


def stream_dataloader(dataset: StreamingDataset, collate_fn: Any, pin_memory: bool = False) -> DataLoader:
    """The loader of a stream's batches on this rank (not sharded by accelerate: each rank reads its own rows).

    The loader has a generator of its own: without one, every ``iter()`` draws its base seed from the global torch RNG,
    and a run resumed mid-epoch (which restores that RNG, then starts a new iterator where the uninterrupted run did
    not) would train with other dropout masks than the uninterrupted run. The stream shuffles with its own seed, so
    the seed drawn from this generator is never used.

    Args:
        dataset: The configured stream.
        collate_fn: The trainer's data collator.
        pin_memory: Pin the batches' memory (only where CUDA is available).
    """
    pin_memory = pin_memory and torch.cuda.is_available()  # pinning needs an accelerator (torch warns without one)
    return DataLoader(
        dataset,
        batch_size=None,
        collate_fn=collate_fn,
        num_workers=0,
        pin_memory=pin_memory,
        generator=torch.Generator(),
    )


def save_stream_state(dataset: StreamingDataset, directory: str | os.PathLike, rank: int) -> Path:
    """Write this rank's stream position into the (staged) checkpoint ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / stream_state_name(rank)
    path.write_text(json.dumps(dataset.state_dict()), encoding="utf8")
    return path


def restore_stream_state(dataset: StreamingDataset, checkpoint: str | os.PathLike, rank: int) -> None:
    """Continue the stream from the position this rank saved in ``checkpoint``."""
    path = Path(checkpoint) / stream_state_name(rank)
    if not path.is_file():
        found = sorted(p.name for p in Path(checkpoint).glob("stream_state_*.json"))
        detail = f"it holds {found}" if found else "it was not written by a streamed run"
        raise DataError(
            f"{checkpoint} has no {path.name} ({detail}): the stream cannot continue where it stopped. Resume with "
            "the number of processes the checkpoint was written with, or start a new run."
        )
    dataset.load_state_dict(json.loads(path.read_text(encoding="utf8")))
    position = {name: state["window_start"] for name, state in dataset.state_dict()["datasets"].items()}
    logger.info("Restored the stream position from %s: %s", path, position)


def rest_of_epoch(global_step: int, batches: int, updates: int, accumulation: int) -> tuple[int, int]:
    """The batches and optimizer steps left in the epoch a streamed run resumes in, at ``global_step``.

    The trainer ends an optimizer step after every ``accumulation`` batches of an epoch and after its last batch, so an
    epoch of ``batches`` batches takes ``updates`` steps, the last one shorter when ``accumulation`` does not divide
    ``batches``. A resumed stream continues mid-epoch without the trainer skipping batches; handed the whole epoch's
    counts, the trainer would miss the epoch's last batch (it counts the resumed epoch from zero) and merge it into the
    next epoch's first step. A checkpoint lies between optimizer steps, so the batches already trained are a multiple
    of ``accumulation``, and the rest of the epoch keeps the uninterrupted run's step boundaries.

    Args:
        global_step: The optimizer steps trained before the resume.
        batches: The batches of one epoch on this rank.
        updates: The optimizer steps of one epoch (``ceil(batches / accumulation)``).
        accumulation: ``gradient_accumulation_steps``.

    Returns:
        The batches and the optimizer steps the resumed epoch has left.
    """
    done = global_step % updates
    return batches - done * accumulation, updates - done


class StreamEpochCallback(TrainerCallback):
    """Keeps ``state.epoch`` right after a streamed run resumes (the trainer counts the resumed epoch's steps from
    zero, since it skipped no batches): the whole epochs trained plus the batches of the current one trained so far.

    Args:
        steps_per_epoch: The batches of one epoch on this rank.
    """

    def __init__(self, steps_per_epoch: int) -> None:
        self.steps_per_epoch = max(1, steps_per_epoch)

    def on_step_end(self, args, state, control, **kwargs):
        accumulation = args.gradient_accumulation_steps
        updates = -(-self.steps_per_epoch // accumulation)  # the last step of an epoch may take fewer batches
        epochs, done = divmod(state.global_step, updates)
        state.epoch = epochs + done * accumulation / self.steps_per_epoch
        return control
