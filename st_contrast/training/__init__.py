"""Training plumbing on top of Sentence Transformers' trainer: checkpointed loss state, config-driven runs."""

from __future__ import annotations

from st_contrast.training.loss_state import LOSS_STATE_NAME, load_loss_state, loss_state_dict, save_loss_state
from st_contrast.training.trainer import ContrastiveTrainer, MonitoredTrainer

__all__ = [
    "LOSS_STATE_NAME",
    "ContrastiveTrainer",
    "MonitoredTrainer",
    "load_loss_state",
    "loss_state_dict",
    "save_loss_state",
]
