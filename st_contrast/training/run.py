"""One training run from a configuration: evaluate, train (resuming when asked), save, evaluate, report."""

from __future__ import annotations

import json
import logging
from functools import partial
from pathlib import Path
from typing import Any

from accelerate import PartialState
from transformers import set_seed
from transformers.trainer_utils import get_last_checkpoint

from st_contrast.callbacks import enable_monitoring
from st_contrast.training.builders import (
    apply_adapters,
    build_loss,
    build_model,
    build_training_arguments,
    loss_needs_sample_index,
)
from st_contrast.training.config import ConfigError, dump_config
from st_contrast.training.trainer import ContrastiveTrainer

__all__ = ["CONFIG_NAME", "FINAL_MODEL_DIR", "METRICS_NAME", "train_from_config"]

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.yaml"
METRICS_NAME = "metrics.json"
FINAL_MODEL_DIR = "model"


def _checkpoint_to_resume(output_dir: Path, resume: str | bool) -> str | None:
    last = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
    if resume is False and last is not None:
        raise ConfigError(
            f"{output_dir} already holds checkpoints ({Path(last).name}) and resume is false: training from "
            "scratch there would overwrite them. Use another output_dir, delete the checkpoints, or resume."
        )
    if resume is True and last is None:
        raise ConfigError(f"resume is true but {output_dir} has no checkpoint-* directory to resume from.")
    return last


def _evaluate(model: Any, section: dict[str, Any], output_dir: Path, stage: str) -> dict[str, Any]:
    from st_contrast.evaluation import evaluate_model

    return evaluate_model(
        model,
        section["tasks"],
        batch_size=section.get("batch_size", 64),
        output_folder=str(output_dir / "eval" / stage),
    )


def _write_metrics(path: Path, metrics: dict[str, Any]) -> None:
    path.write_text(json.dumps(metrics, indent=2, sort_keys=False) + "\n", encoding="utf8")


def train_from_config(config: dict[str, Any]) -> dict[str, Any]:
    """Run the configured training and return the metrics that are also written to ``metrics.json``.

    Rerunning the same configuration continues from the newest ``checkpoint-*`` of ``output_dir``
    (``resume: auto``, the default) with the model, optimizer, scheduler, RNG, data order and loss state
    of that checkpoint; the "before" evaluation is then not repeated.
    """
    state = PartialState()
    output_dir = Path(config["output_dir"])
    checkpoint = _checkpoint_to_resume(output_dir, config.get("resume", "auto"))
    metrics_path = output_dir / METRICS_NAME
    metrics: dict[str, Any] = (
        json.loads(metrics_path.read_text(encoding="utf8")) if checkpoint and metrics_path.is_file() else {}
    )
    if state.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        dump_config(config, output_dir / CONFIG_NAME)
    set_seed(int(config.get("seed", 12)))

    from st_contrast.data import build_training_data

    model = build_model(config["model"])
    apply_adapters(model, config.get("adapters"))
    data_section = config["data"]
    sample_index = data_section.get("sample_index", "auto")
    data = build_training_data(
        [_with_fallback(spec) for spec in data_section["datasets"]],
        add_sample_index=loss_needs_sample_index(config["loss"]) if sample_index == "auto" else bool(sample_index),
    )
    loss = build_loss(model, config["loss"], num_samples=data.num_samples)

    evaluation = config.get("evaluation") or {}
    if evaluation.get("tasks") and evaluation.get("before", True) and "before" not in metrics:
        if state.is_main_process:
            metrics["before"] = _evaluate(model, evaluation, output_dir, "before")
            _write_metrics(metrics_path, metrics)
        state.wait_for_everyone()

    sampler_arguments = _sampler_arguments(data_section, model, data.prompts, data.weights)
    args = build_training_arguments(config, prompts=data.prompts or None, **sampler_arguments)
    monitoring = config.get("monitoring") or {}
    trainer = ContrastiveTrainer(
        model=model, args=args, train_dataset=data.dataset, loss=loss, evaluator=_geometry_probe(monitoring)
    )
    if monitoring.get("enabled", True):
        enable_monitoring(
            trainer,
            output_dir,
            spectrum_every=int(monitoring.get("spectrum_every", 0)),
            spectrum_patterns=monitoring.get("spectrum_patterns"),
            peak_flops=monitoring.get("peak_flops"),
        )
    if checkpoint:
        logger.info("Resuming from %s", checkpoint)
    result = trainer.train(resume_from_checkpoint=checkpoint)
    metrics["train"] = result.metrics
    trainer.save_model(str(output_dir / FINAL_MODEL_DIR))

    if evaluation.get("tasks") and evaluation.get("after", True):
        if state.is_main_process:
            metrics["after"] = _evaluate(model, evaluation, output_dir, "after")
        state.wait_for_everyone()
    if state.is_main_process:
        _write_metrics(metrics_path, metrics)
    return metrics


def _with_fallback(spec: dict[str, Any]) -> dict[str, Any]:
    """The dataset entry, or its ``fallback`` entry (e.g. a hub dataset) when its local ``path`` does not exist."""
    spec = dict(spec)
    fallback = spec.pop("fallback", None)
    if fallback and not Path(str(spec.get("path", ""))).exists():
        logger.warning("Dataset %r: %s does not exist, using %s", spec.get("name"), spec.get("path"), fallback)
        spec.update(fallback)
    return spec


def _sampler_arguments(section: dict[str, Any], model: Any, prompts: Any, weights: Any) -> dict[str, Any]:
    """``batch_sampler`` / ``multi_dataset_batch_sampler`` training arguments from the ``data`` section."""
    from st_contrast.data import SingleDatasetBatchSampler, TokenBudgetBatchSampler

    arguments: dict[str, Any] = {}
    sampler = section.get("batch_sampler", "no_duplicates")
    if sampler == "token_budget":
        if not section.get("max_tokens"):
            raise ConfigError("data.batch_sampler: token_budget needs data.max_tokens (padded tokens per batch).")
        arguments["batch_sampler"] = partial(
            TokenBudgetBatchSampler,
            max_tokens=int(section["max_tokens"]),
            tokenizer=model,
            prompts=prompts,
            no_duplicates=bool(section.get("no_duplicates", True)),
        )
    elif sampler in ("batch_sampler", "no_duplicates", "no_duplicates_hashed", "group_by_label"):
        arguments["batch_sampler"] = sampler
    else:
        raise ConfigError(
            f"data.batch_sampler must be batch_sampler, no_duplicates, no_duplicates_hashed, group_by_label or "
            f"token_budget, not {sampler!r}."
        )
    if section.get("single_dataset_batches", True):
        arguments["multi_dataset_batch_sampler"] = partial(SingleDatasetBatchSampler, weights=weights)
    return arguments


def _geometry_probe(monitoring: dict[str, Any]) -> Any:
    """The embedding-geometry evaluator on ``monitoring.probe`` (a dataset entry like those of ``data``), if any."""
    if not monitoring.get("probe"):
        return None
    from st_contrast.callbacks import with_geometry_probe
    from st_contrast.data import load_dataset_spec

    return with_geometry_probe(None, load_dataset_spec({"name": "probe", **monitoring["probe"]}))
