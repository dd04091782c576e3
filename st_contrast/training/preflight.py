"""Checks of a validated run configuration against this machine and the files it names, before anything heavy.

:class:`~st_contrast.training.specs.RunConfig` checks what the configuration says on its own; these check what it
points at: the model's architecture (can it run packed?), the attention backend (can it run on this device and
dtype?), the evaluation tasks' files. Each failure is a :class:`ConfigError` naming the key, the value and the fix;
nothing is loaded and nothing is written before they pass.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from st_contrast.training.specs import RunConfig
from st_contrast.training.validation import ConfigError

__all__ = ["check_attention_backend", "check_model_architecture", "preflight"]


def preflight(config: RunConfig, model_path: str) -> list[Any]:
    """Run every check; returns the evaluation tasks, resolved (their files read and checked) for later use."""
    check_model_architecture(config, model_path)
    check_attention_backend(config)
    return _evaluation_tasks(config)


def _model_type(model_path: str) -> str | None:
    """The ``model_type`` in a local model's ``config.json`` (None for hub ids and layouts without one)."""
    config_file = Path(model_path) / "config.json"
    if not config_file.is_file():
        return None
    try:
        return json.loads(config_file.read_text(encoding="utf8")).get("model_type")
    except (OSError, ValueError):
        return None


def check_model_architecture(config: RunConfig, model_path: str) -> None:
    looks_local = model_path.startswith((".", "/", "~")) or os.sep in model_path.strip("/").split("/", 1)[-1]
    if looks_local and not Path(model_path).expanduser().exists():
        raise ConfigError(f"model.name_or_path: {model_path!r} does not exist (a local path, a hub id or 'minilm').")
    from st_contrast.modules.architectures import packed_refusal

    model_type = _model_type(model_path)
    if config.model.packed and model_type is not None and (reason := packed_refusal(model_type)):
        raise ConfigError(f"model.packed: {model_path}: {reason}.")


def check_attention_backend(config: RunConfig) -> None:
    """An explicit GPU kernel must be able to run where and in the dtype the run trains."""
    backend = config.model.attention_backend
    if not config.model.packed or backend not in ("varlen", "flash_attn"):
        return
    from st_contrast.attention import available_backends

    reason = available_backends()[backend]
    training = config.training
    if reason is None and training.get("use_cpu"):
        reason = "training.use_cpu is true"
    if reason is None and not (training.get("bf16") or training.get("fp16")):
        reason = "it needs fp16/bf16 tensors: set training.bf16: true (or fp16)"
    if reason is not None:
        raise ConfigError(
            f"model.attention_backend: {backend!r} cannot run here: {reason}. Use 'auto' (the best kernel available "
            "for each batch) or 'sdpa' (exact, any device)."
        )


def _evaluation_tasks(config: RunConfig) -> list[Any]:
    if not config.evaluation.tasks:
        return []
    from st_contrast.evaluation import DataFormatError, HubUnavailableError, TaskSpecError, resolve_tasks

    try:
        return resolve_tasks(config.evaluation.tasks)
    except (TaskSpecError, DataFormatError, HubUnavailableError, FileNotFoundError) as error:
        raise ConfigError(f"evaluation.tasks: {error}") from None
