"""The ``training`` section: Sentence Transformers' training arguments, checked by name, type and range up front."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import typing
from pathlib import Path
from typing import Any

from sentence_transformers import SentenceTransformerTrainingArguments

from st_contrast.training.validation import ConfigError, check_type

__all__ = ["build_training_arguments", "check_training_arguments"]

# Set from other sections: a value here would be silently replaced.
_MANAGED = {
    "output_dir": "the top-level output_dir",
    "prompts": "the datasets' query_prefix / document_prefix (data.datasets)",
    "batch_sampler": "data.batch_sampler",
    "multi_dataset_batch_sampler": "data.single_dataset_batches",
}
_AT_LEAST_ONE = ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps")
_POSITIVE = ("num_train_epochs", "logging_steps", "save_steps", "eval_steps", "save_total_limit")
_NOT_NEGATIVE = ("learning_rate", "weight_decay", "warmup_steps", "warmup_ratio", "max_grad_norm")


@functools.cache
def _argument_types() -> dict[str, Any]:
    fields = {f.name for f in dataclasses.fields(SentenceTransformerTrainingArguments) if f.init}
    try:
        hints = typing.get_type_hints(SentenceTransformerTrainingArguments)
    except Exception:  # an annotation this Python cannot resolve: names are still checked
        hints = {}
    return {name: hints.get(name, Any) for name in fields}


def check_training_arguments(training: dict[str, Any]) -> None:
    """Raise :class:`ConfigError` naming the first key of ``training`` that is unknown, mistyped or out of range."""
    types = _argument_types()
    for key, value in training.items():
        if key in _MANAGED:
            raise ConfigError(f"training.{key} is set from {_MANAGED[key]}; remove it from 'training'.")
        if key not in types:
            close = difflib.get_close_matches(key, list(types), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"Unknown training argument {key!r}.{hint} (training takes SentenceTransformerTrainingArguments fields)"
            )
        if value is not None:
            check_type(f"training.{key}", value, types[key])
    for key in _AT_LEAST_ONE:
        if key in training and training[key] is not None and training[key] < 1:
            raise ConfigError(f"training.{key} must be at least 1, got {training[key]!r}.")
    for key in _POSITIVE:
        if key in training and training[key] is not None and not training[key] > 0:
            raise ConfigError(f"training.{key} must be positive, got {training[key]!r}.")
    for key in _NOT_NEGATIVE:
        if key in training and training[key] is not None and training[key] < 0:
            raise ConfigError(f"training.{key} must not be negative, got {training[key]!r}.")
    if "max_steps" in training and training["max_steps"] != -1 and not training["max_steps"] > 0:
        raise ConfigError(
            f"training.max_steps must be positive (or -1: train num_train_epochs), got {training['max_steps']!r}."
        )


def build_training_arguments(
    output_dir: str, training: dict[str, Any], seed: int | None = None, **extra: Any
) -> SentenceTransformerTrainingArguments:
    """``SentenceTransformerTrainingArguments`` from the ``training`` section, ``output_dir`` and ``seed``.

    Args:
        output_dir: The run's output directory.
        training: The ``training`` section (checked with :func:`check_training_arguments`).
        seed: The top-level seed (a ``training.seed`` wins).
        **extra: Arguments set from other sections (prompts, batch samplers).
    """
    check_training_arguments(training)
    options = {"report_to": "none", **training, **extra}
    if seed is not None:
        options.setdefault("seed", seed)
    try:
        return SentenceTransformerTrainingArguments(output_dir=str(Path(output_dir)), **options)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"training: {error}") from error
