"""``ContrastiveTrainer``: Sentence Transformers' trainer with crash-safe checkpoints that carry the loss's state."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from sentence_transformers import SentenceTransformerTrainer
from sentence_transformers.base.modality_types import MODALITY_TO_PROCESSOR_ARG as MODALITIES
from sentence_transformers.base.modules import Router
from transformers import TrainerCallback, TrainerState
from transformers.trainer_callback import ProgressCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, TrainOutput

from st_contrast.callbacks.trainer_mixin import MonitoringMixin, enable_monitoring, with_geometry_probe
from st_contrast.compat import (
    accept_indexed_cpu_locations,
    load_checkpoint_weights,
    trainer_output_dir,
    training_progress_bar,
)
from st_contrast.data.image_collator import ImageTextDataCollator
from st_contrast.data.single_dataset import SamplerEpochCallback
from st_contrast.data.streaming import StreamingDataset
from st_contrast.losses.progress import set_training_progress
from st_contrast.losses.sample_state import without_sample_state
from st_contrast.losses.temperature import learned_temperatures
from st_contrast.training.checkpoints import (
    STAGING_DIR,
    checkpoint_problem,
    commit_checkpoint,
    newest_complete_checkpoint,
    recover_staging,
    rotate_checkpoints,
    write_manifest,
)
from st_contrast.training.loss_state import LOSS_STATE_NAME, load_loss_state, loss_state_dict, save_loss_state
from st_contrast.training.stream_state import (
    StreamEpochCallback,
    configure_stream,
    rest_of_epoch,
    restore_stream_state,
    save_stream_state,
    stream_dataloader,
)

__all__ = ["ContrastiveTrainer", "MonitoredTrainer", "check_tower_loss"]

logger = logging.getLogger(__name__)


class ContrastiveTrainer(MonitoringMixin, SentenceTransformerTrainer):
    """st_contrast's trainer: :class:`~sentence_transformers.SentenceTransformerTrainer` that checkpoints the loss's
    own state, keeps the data order across resumes, and monitors the run.

    - **Loss state.** Losses such as :class:`~st_contrast.losses.GloFND` (per-anchor thresholds),
      :class:`~st_contrast.losses.GlobalContrastiveLoss` (per-sample moving averages) and every learned temperature
      keep state in the loss, outside the model. Every checkpoint also holds that state in ``loss_state.pt``, and
      ``train(resume_from_checkpoint=...)`` restores it with the model, optimizer, scheduler and RNG, so a resumed
      run continues exactly where it stopped. Stateless losses write nothing extra.
    - **Crash-safe checkpoints.** Each checkpoint is written into ``<output_dir>/.staging``, listed with its file
      sizes, flushed, and renamed to ``checkpoint-N`` only when complete; ``save_total_limit`` removes old ones only
      after that (:mod:`st_contrast.training.checkpoints`). ``resume_from_checkpoint=True`` takes the newest
      complete checkpoint and skips damaged newer ones with a warning naming them.
    - **Data order.** :class:`~st_contrast.data.SamplerEpochCallback` keeps the interrupted epoch's order when a
      multi-process run resumes.
    - **Streams.** A :class:`~st_contrast.data.StreamingDataset` (URLs, ``stream: true``) is batched by itself: one
      dataset per step on every rank, each rank reading its own rows. Every checkpoint holds each rank's stream
      position (``stream_state_<rank>.json``), and a resumed run continues with the next unseen row
      (:mod:`st_contrast.training.stream_state`).
    - **Temperatures.** Every learned temperature / logit bias of the loss
      (:class:`~st_contrast.losses.temperature.LearnedTemperature`) is excluded from weight decay, gets its own
      learning rate when the loss was given ``temperature_lr``, and is clamped after every optimizer step as CLIP does.
    - **Progress.** Losses that schedule by training progress (GloFND's update and filtering starts, FastCLIP's
      gamma decay) get the trainer's step and epoch before every step.
    - **Images.** Image columns of :mod:`st_contrast.data` hold references; the collator
      (:class:`~st_contrast.data.ImageTextDataCollator`) decodes each batch's images, with errors naming file and row.
    - **Monitoring** (on by default): ``log.jsonl`` / ``eval.jsonl`` in ``args.output_dir``, real tokens/s, MFU and
      the step-time breakdown in the logs and the progress bar (:func:`~st_contrast.callbacks.enable_monitoring`).

    Args:
        *args, **kwargs: As for ``SentenceTransformerTrainer``.
        monitoring: ``True`` (default), ``False`` to switch monitoring off, or the keyword arguments of
            :func:`~st_contrast.callbacks.enable_monitoring` (``probe``, ``spectrum_every``, ``peak_flops``...).

    Example:
        ::

            from st_contrast import ContrastiveTrainer
            from st_contrast.losses import GloFND, InfoNCELoss

            loss = InfoNCELoss(model, false_negative_detector=GloFND(num_samples=len(train_dataset)))
            trainer = ContrastiveTrainer(model=model, args=args, train_dataset=train_dataset, loss=loss)
            trainer.train(resume_from_checkpoint=True)  # the latest checkpoint in args.output_dir, if any
    """

    data_collator_class = ImageTextDataCollator

    def __init__(self, *args: Any, monitoring: bool | dict[str, Any] = True, **kwargs: Any) -> None:
        options = dict(monitoring) if isinstance(monitoring, dict) else {}
        if options.get("probe") is not None:
            # ST checks at construction that an eval_strategy has something to evaluate
            probe, name = options.pop("probe"), options.get("probe_name", "geometry")
            kwargs["evaluator"] = with_geometry_probe(kwargs.get("evaluator"), probe, name)
        stream = kwargs.get("train_dataset", args[2] if len(args) > 2 else None)
        if isinstance(stream, StreamingDataset):  # batch size, seed and ranks come from the arguments
            training_args = kwargs.get("args", args[1] if len(args) > 1 else None)
            if training_args is None:
                raise ValueError("A StreamingDataset trains with explicit args (its batch size, seed, processes).")
            configure_stream(stream, training_args)
            # Hidden from the upstream constructor, whose model card would read rows out of it; set right after.
            if "train_dataset" in kwargs:
                kwargs["train_dataset"] = None
            else:
                args = (*args[:2], None, *args[3:])
        super().__init__(*args, **kwargs)
        if isinstance(stream, StreamingDataset):
            self.train_dataset = stream
        check_tower_loss(self.model, self.loss, self.args.world_size)
        # A resumed multi-process run must continue the interrupted epoch's data order (see the callback).
        self.add_callback(SamplerEpochCallback())
        if isinstance(self.train_dataset, StreamingDataset):
            self.add_callback(StreamEpochCallback(len(self.train_dataset)))
        self.add_callback(_ClampTemperatures(self))
        self.add_callback(_ClearLossGradients(self))
        if monitoring is not False:
            enable_monitoring(self, **options)

    def get_data_collator(self, model: Any, args: Any, processing_class: Any = None) -> Any:
        """ST's collator; a model whose ``Router`` routes by modality only (a two-tower image-text model) needs no
        ``router_mapping``: each column goes to the tower of its modality, as in ``model.encode``."""
        if not args.router_mapping and any(_routes_by_modality(module) for module in model.children()):
            return self.data_collator_class(preprocess_fn=model.preprocess, router_mapping={}, prompts=args.prompts)
        return super().get_data_collator(model, args, processing_class)

    def get_train_dataloader(self) -> Any:
        """ST's loader, or for a :class:`~st_contrast.data.StreamingDataset` a loader of its batches on this rank."""
        if isinstance(self.train_dataset, StreamingDataset):
            self._train_dataloader = stream_dataloader(
                self.train_dataset, self.data_collator, pin_memory=self.args.dataloader_pin_memory
            )
            return self._train_dataloader
        return super().get_train_dataloader()

    def _run_epoch(self, **kwargs: Any) -> Any:
        """The upstream epoch; a stream resumed mid-epoch runs the rest of its epoch (:func:`rest_of_epoch`)."""
        resumed = kwargs["epoch"] == kwargs["epochs_trained"] and kwargs["resume_from_checkpoint"] is not None
        if resumed and isinstance(self.train_dataset, StreamingDataset):
            kwargs["steps_in_epoch"], kwargs["num_update_steps_per_epoch"] = rest_of_epoch(
                self.state.global_step,
                kwargs["steps_in_epoch"],
                kwargs["num_update_steps_per_epoch"],
                self.args.gradient_accumulation_steps,
            )
        return super()._run_epoch(**kwargs)

    def training_step(self, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None) -> Any:
        set_training_progress(self.loss, self.state.global_step, self.state.epoch or 0.0)
        return super().training_step(model, inputs, num_items_in_batch)

    def prediction_step(self, *args: Any, **kwargs: Any) -> Any:
        """The upstream evaluation step; losses with per-sample state (GloFND, SogCLR / FastCLIP) give their batch-only
        value there: an evaluation dataset's rows are not the training samples their state belongs to."""
        with without_sample_state():
            return super().prediction_step(*args, **kwargs)

    def get_decay_parameter_names(self, model: torch.nn.Module) -> list[str]:
        """The upstream choice, without the loss's learned temperatures (decay would drag them to 1)."""
        excluded = {id(p) for temperature in learned_temperatures(self.loss) for p in temperature.parameters()}
        names = set(super().get_decay_parameter_names(model))
        return [name for name, parameter in model.named_parameters() if name in names and id(parameter) not in excluded]

    def get_optimizer_cls_and_kwargs(self, args: Any, model: torch.nn.Module | None = None) -> tuple[Any, Any]:
        """The upstream optimizer groups; a temperature given its own ``lr`` moves to a group of its own."""
        optimizer_cls, optimizer_kwargs = super().get_optimizer_cls_and_kwargs(args, model)
        groups = optimizer_kwargs.get("optimizer_dict")
        own = [temperature for temperature in learned_temperatures(self.loss) if temperature.lr is not None]
        if groups is None or not own:
            return optimizer_cls, optimizer_kwargs
        for temperature in own:
            moved = {id(p) for p in temperature.parameters()}
            for group in groups:
                group["params"] = [p for p in group["params"] if id(p) not in moved]
            groups.append({"params": list(temperature.parameters()), "lr": temperature.lr, "weight_decay": 0.0})
        return optimizer_cls, optimizer_kwargs

    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs: Any) -> Any:
        """``SentenceTransformerTrainer.train``; ``resume_from_checkpoint=True`` takes the newest *complete*
        checkpoint of ``args.output_dir``, and a named checkpoint is checked before anything loads from it."""
        if self.args.should_save:
            recover_staging(self.args.output_dir)  # what a killed save left: a complete checkpoint moves into place
        self.accelerator.wait_for_everyone()  # before any rank looks for the checkpoint to resume from
        if resume_from_checkpoint is True:
            choice = newest_complete_checkpoint(self.args.output_dir)
            if choice.path is None:
                damaged = "".join(f"; {path}: {problem}" for path, problem in choice.skipped)
                raise ValueError(f"No complete checkpoint to resume from in {self.args.output_dir}{damaged}.")
            resume_from_checkpoint = choice.path
        elif isinstance(resume_from_checkpoint, str) and (problem := checkpoint_problem(resume_from_checkpoint)):
            raise ValueError(f"Cannot resume from {resume_from_checkpoint}: {problem}.")
        if isinstance(resume_from_checkpoint, str) and self._is_final_checkpoint(resume_from_checkpoint):
            return self._finish_from_checkpoint(resume_from_checkpoint)
        try:
            return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
        except BaseException:
            self._end_progress_bar()  # an error (e.g. a bad row found while streaming) starts on its own line
            raise
        finally:
            if isinstance(self.train_dataset, StreamingDataset):
                self.train_dataset.close()  # its background readers (the position stays, for a later train call)

    def _end_progress_bar(self) -> None:
        for callback in self.callback_handler.callbacks:
            if isinstance(callback, ProgressCallback) and (bar := training_progress_bar(callback)) is not None:
                bar.close()

    def _is_final_checkpoint(self, checkpoint: str) -> bool:
        """Whether ``checkpoint`` already holds the last step of this run (transformers would train one more)."""
        state = TrainerState.load_from_json(os.path.join(checkpoint, "trainer_state.json"))
        if self.args.max_steps > 0:
            target = self.args.max_steps
        elif state.num_train_epochs == self.args.num_train_epochs:
            target = state.max_steps
        else:
            return False
        return state.global_step >= target

    def _finish_from_checkpoint(self, checkpoint: str) -> TrainOutput:
        """A run stopped after its final checkpoint: restore model and loss state from it, train no further."""
        self.state = TrainerState.load_from_json(os.path.join(checkpoint, "trainer_state.json"))
        load_checkpoint_weights(self, checkpoint)
        self._restore_loss_state(checkpoint)
        logger.info("%s holds the final step %d: nothing left to train.", checkpoint, self.state.global_step)
        losses = [entry["loss"] for entry in self.state.log_history if "loss" in entry]
        metrics = {"global_step": self.state.global_step, "epoch": self.state.epoch or 0.0}
        return TrainOutput(self.state.global_step, losses[-1] if losses else float("nan"), metrics)

    def _get_output_dir(self, trial: Any) -> str:
        # While a checkpoint is being written, the upstream save writes it into the staging area.
        staging = getattr(self, "_checkpoint_staging", None)
        return staging if staging is not None else super()._get_output_dir(trial=trial)

    def _save_checkpoint(self, model: torch.nn.Module, trial: Any) -> None:
        run_dir = trainer_output_dir(self, trial)
        staging = os.path.join(run_dir, STAGING_DIR)
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        self._checkpoint_staging = staging
        try:
            super()._save_checkpoint(model, trial)  # model, optimizer, scheduler, RNG, trainer state: into staging
        finally:
            self._checkpoint_staging = None
        staged, final = Path(staging) / name, Path(run_dir) / name
        if isinstance(self.train_dataset, StreamingDataset):  # every rank: its stream position, before the commit
            save_stream_state(self.train_dataset, staged, self.args.process_index)
        if self.args.should_save:
            best = self.state.best_model_checkpoint
            if best and best.startswith(staging):  # recorded under the staging path: point it at the final one
                self.state.best_model_checkpoint = os.path.join(run_dir, os.path.basename(best))
                self.state.save_to_json(str(staged / "trainer_state.json"))
            if save_loss_state(self.loss, staged) is not None:
                logger.info("Saved the loss state to %s", final / LOSS_STATE_NAME)
        self.accelerator.wait_for_everyone()  # every rank has written its RNG state (and shards)
        if self.args.should_save:
            write_manifest(staged, self.state.global_step)
            commit_checkpoint(staged, final)
            protected = {str(final), *([self.state.best_model_checkpoint] if self.state.best_model_checkpoint else [])}
            rotate_checkpoints(run_dir, self.args.save_total_limit, protected)
        self.accelerator.wait_for_everyone()

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        # Called on every resume path (plain, DeepSpeed, FSDP), unlike _load_from_checkpoint.
        accept_indexed_cpu_locations()  # transformers 5.17 loads a multi-process CPU run's optimizer onto "cpu:<rank>"
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None:
            self._restore_loss_state(checkpoint)
            if isinstance(self.train_dataset, StreamingDataset):
                restore_stream_state(self.train_dataset, checkpoint, self.args.process_index)

    def _restore_loss_state(self, checkpoint: str) -> None:
        path = os.path.join(checkpoint, LOSS_STATE_NAME)
        if os.path.isfile(path):
            load_loss_state(self.loss, torch.load(path, map_location="cpu", weights_only=True))
            logger.info("Restored the loss state from %s", path)
        elif loss_state_dict(self.loss):
            raise FileNotFoundError(
                f"{checkpoint} has no {LOSS_STATE_NAME}, but this loss keeps per-sample state that would silently "
                "restart from its initial values. Resume from a checkpoint written by st_contrast's "
                "ContrastiveTrainer, or start a new run."
            )


def check_tower_loss(model: Any, loss: Any, world_size: int) -> None:
    """Refuse an uncached loss for a modality-routed (two-tower) model on several processes.

    Such a loss embeds the image and the text columns in separate forward passes through disjoint towers before one
    backward, which ``DistributedDataParallel`` cannot reduce: it stops deep in the backward pass, or (with
    ``ddp_find_unused_parameters=False``) averages one tower's gradients wrongly. GradCache losses re-embed under
    ``no_sync`` and are reduced right (tested on 2 processes).
    """
    losses = loss.values() if isinstance(loss, dict) else [loss]
    if world_size > 1 and any(_routes_by_modality(module) for module in model.children()):
        uncached = [type(part).__name__ for part in losses if not getattr(part, "uses_gradient_cache", False)]
        if uncached:
            raise ValueError(
                f"{', '.join(uncached)} on a two-tower (modality-routed) model cannot train on {world_size} processes: "
                "DistributedDataParallel cannot reduce the two towers' separate forward passes. Use a GradCache "
                "loss: CachedInfoNCELoss, or GradCacheLoss(loss) (in a config: loss.gradcache: {mini_batch_size: 32})."
            )


def _routes_by_modality(module: Any) -> bool:
    """Whether ``module`` is a ``Router`` whose every route is chosen by modality, never by task."""
    if not isinstance(module, Router):
        return False
    if module.route_mappings:
        return all(task is None and modality is not None for task, modality in module.route_mappings)
    return set(module.sub_modules) <= set(MODALITIES)


class _ClampTemperatures(TrainerCallback):
    """After every optimizer step, keep each learned temperature in its range (CLIP clamps its logit scale)."""

    def __init__(self, trainer: ContrastiveTrainer) -> None:
        self.trainer = trainer

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        for temperature in learned_temperatures(self.trainer.loss):
            temperature.clamp_()


class _ClearLossGradients(TrainerCallback):
    """Clear the gradients of the parameters a loss owns outside the model (a learned temperature) before training
    and after every optimizer step: transformers' Trainer clears only the model's (``model.zero_grad()``), so on
    sentence-transformers < 6.2, which does not clear the rest, a temperature's gradient summed over all steps so far.
    """

    def __init__(self, trainer: ContrastiveTrainer) -> None:
        self.trainer = trainer
        self.parameters: list[torch.nn.Parameter] = []

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        in_model = {id(parameter) for parameter in self.trainer.model.parameters()}
        losses = self.trainer.loss.values() if isinstance(self.trainer.loss, dict) else [self.trainer.loss]
        owned = {id(p): p for loss in losses for p in loss.parameters() if id(p) not in in_model}
        self.parameters = list(owned.values())
        self._clear()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._clear()

    def _clear(self) -> None:
        for parameter in self.parameters:
            parameter.grad = None


MonitoredTrainer = ContrastiveTrainer
"""Former name of :class:`ContrastiveTrainer` (which now monitors by default)."""
