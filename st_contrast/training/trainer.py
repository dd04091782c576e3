"""``ContrastiveTrainer``: Sentence Transformers' trainer whose checkpoints also carry the loss's own state."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from sentence_transformers import SentenceTransformerTrainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from st_contrast.callbacks.trainer_mixin import MonitoringMixin, enable_monitoring, with_geometry_probe
from st_contrast.compat import trainer_output_dir
from st_contrast.data.single_dataset import SamplerEpochCallback
from st_contrast.training.loss_state import LOSS_STATE_NAME, load_loss_state, loss_state_dict, save_loss_state

__all__ = ["ContrastiveTrainer", "MonitoredTrainer"]

logger = logging.getLogger(__name__)


class ContrastiveTrainer(MonitoringMixin, SentenceTransformerTrainer):
    """st_contrast's trainer: :class:`~sentence_transformers.SentenceTransformerTrainer` that checkpoints the loss's
    own state, keeps the data order across resumes, and monitors the run.

    - **Loss state.** Losses such as :class:`~st_contrast.losses.GloFND` (per-anchor thresholds),
      :class:`~st_contrast.losses.GlobalContrastiveLoss` (per-sample moving averages) and every learned temperature
      keep state in the loss, outside the model. Every checkpoint also holds that state in ``loss_state.pt``, and
      ``train(resume_from_checkpoint=...)`` restores it with the model, optimizer, scheduler and RNG, so a resumed
      run continues exactly where it stopped. Stateless losses write nothing extra.
    - **Data order.** :class:`~st_contrast.data.SamplerEpochCallback` keeps the interrupted epoch's order when a
      multi-process run resumes.
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

    def __init__(self, *args: Any, monitoring: bool | dict[str, Any] = True, **kwargs: Any) -> None:
        options = dict(monitoring) if isinstance(monitoring, dict) else {}
        if options.get("probe") is not None:
            # ST checks at construction that an eval_strategy has something to evaluate
            probe, name = options.pop("probe"), options.get("probe_name", "geometry")
            kwargs["evaluator"] = with_geometry_probe(kwargs.get("evaluator"), probe, name)
        super().__init__(*args, **kwargs)
        # A resumed multi-process run must continue the interrupted epoch's data order (see the callback).
        self.add_callback(SamplerEpochCallback())
        if monitoring is not False:
            enable_monitoring(self, **options)

    def _save_checkpoint(self, model: torch.nn.Module, trial: Any) -> None:
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            folder = Path(trainer_output_dir(self, trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            if save_loss_state(self.loss, folder) is not None:
                logger.info("Saved the loss state to %s", folder / LOSS_STATE_NAME)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        # Called on every resume path (plain, DeepSpeed, FSDP), unlike _load_from_checkpoint.
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
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


MonitoredTrainer = ContrastiveTrainer
"""Former name of :class:`ContrastiveTrainer` (which now monitors by default)."""
