"""Training progress for losses that schedule by it (GloFND's start of updates and filtering, FastCLIP's gamma)."""

from __future__ import annotations

from torch import nn

__all__ = ["set_training_progress"]


def set_training_progress(loss: nn.Module | dict[str, nn.Module], step: int, epoch: float) -> None:
    """Give every part of ``loss`` that has ``set_progress(step, epoch)`` the trainer's optimizer step and epoch.

    :class:`~st_contrast.ContrastiveTrainer` calls it before every training step; outside it, such losses count their
    own training evaluations (and refuse schedules in epochs).
    """
    modules = loss.values() if isinstance(loss, dict) else [loss]
    for module in modules:
        for child in module.modules():
            if callable(getattr(child, "set_progress", None)):
                child.set_progress(step, epoch)
