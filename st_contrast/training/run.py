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

from st_contrast.training.arguments import build_training_arguments
from st_contrast.training.builders import apply_adapters, build_loss, build_model
from st_contrast.training.config import dump_config
from st_contrast.training.specs import DataSection, EvaluationSpec, MonitoringSpec, RunConfig
from st_contrast.training.trainer import ContrastiveTrainer
from st_contrast.training.validation import ConfigError

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


def _evaluate(model: Any, section: EvaluationSpec, output_dir: Path, stage: str) -> dict[str, Any]:
    from st_contrast.evaluation import evaluate_model

    return evaluate_model(
        model, section.tasks, batch_size=section.batch_size, output_folder=str(output_dir / "eval" / stage)
    )


def _write_metrics(path: Path, metrics: dict[str, Any]) -> None:
    path.write_text(json.dumps(metrics, indent=2, sort_keys=False) + "\n", encoding="utf8")


def train_from_config(config: RunConfig | dict[str, Any]) -> dict[str, Any]:
    """Run the configured training and return the metrics that are also written to ``metrics.json``.

    Rerunning the same configuration continues from the newest ``checkpoint-*`` of ``output_dir``
    (``resume: auto``, the default) with the model, optimizer, scheduler, RNG, data order and loss state
    of that checkpoint; the "before" evaluation is then not repeated. The final model is written to
    ``output_dir/model`` as a plain Sentence Transformers model (:func:`st_contrast.export_model`).
    """
    from st_contrast.model_io import export_model

    config = config if isinstance(config, RunConfig) else RunConfig.from_dict(config)
    state = PartialState()
    output_dir = Path(config.output_dir)
    checkpoint = _checkpoint_to_resume(output_dir, config.resume)
    metrics_path = output_dir / METRICS_NAME
    metrics: dict[str, Any] = (
        json.loads(metrics_path.read_text(encoding="utf8")) if checkpoint and metrics_path.is_file() else {}
    )
    if state.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        dump_config(config.raw, output_dir / CONFIG_NAME)
    set_seed(config.seed)

    from st_contrast.data import build_training_data

    model = build_model(config.model)
    apply_adapters(model, config.adapters)
    data_section = config.data
    sample_index = data_section.sample_index
    data = build_training_data(
        [_with_fallback(spec) for spec in data_section.datasets],
        add_sample_index=config.loss.needs_sample_index if sample_index == "auto" else bool(sample_index),
    )
    loss = build_loss(model, config.loss, num_samples=data.num_samples)

    evaluation = config.evaluation
    if evaluation.tasks and evaluation.before and "before" not in metrics:
        if state.is_main_process:
            metrics["before"] = _evaluate(model, evaluation, output_dir, "before")
            _write_metrics(metrics_path, metrics)
        state.wait_for_everyone()

    sampler_arguments = _sampler_arguments(data_section, model, data.prompts, data.weights)
    args = build_training_arguments(
        config.output_dir, config.training, seed=config.seed, prompts=data.prompts or None, **sampler_arguments
    )
    trainer = ContrastiveTrainer(
        model=model,
        args=args,
        train_dataset=data.dataset,
        loss=loss,
        evaluator=_geometry_probe(config.monitoring),
        monitoring=_monitoring_options(config.monitoring, output_dir),
    )
    if checkpoint:
        logger.info("Resuming from %s", checkpoint)
    result = trainer.train(resume_from_checkpoint=checkpoint)
    metrics["train"] = result.metrics
    if state.is_main_process:
        report = export_model(trainer.model, output_dir / FINAL_MODEL_DIR, verify=False)
        if not report.plain:
            logger.warning("The final model needs st_contrast.load_model: %s", " ".join(report.notes))
    state.wait_for_everyone()

    if evaluation.tasks and evaluation.after:
        if state.is_main_process:
            metrics["after"] = _evaluate(model, evaluation, output_dir, "after")
        state.wait_for_everyone()
    if state.is_main_process:
        _write_metrics(metrics_path, metrics)
    return metrics


def _monitoring_options(section: MonitoringSpec, output_dir: Path) -> dict[str, Any] | bool:
    if not section.enabled:
        return False
    return {
        "output_dir": output_dir,
        "spectrum_every": section.spectrum_every,
        "spectrum_patterns": section.spectrum_patterns,
        "peak_flops": section.peak_flops,
    }


def _with_fallback(spec: dict[str, Any]) -> dict[str, Any]:
    """The dataset entry, or its ``fallback`` entry (e.g. a hub dataset) when its local ``path`` does not exist."""
    spec = dict(spec)
    fallback = spec.pop("fallback", None)
    if fallback and not Path(str(spec.get("path", ""))).exists():
        logger.warning("Dataset %r: %s does not exist, using %s", spec.get("name"), spec.get("path"), fallback)
        spec.update(fallback)
    return spec


def _sampler_arguments(section: DataSection, model: Any, prompts: Any, weights: Any) -> dict[str, Any]:
    """``batch_sampler`` / ``multi_dataset_batch_sampler`` training arguments from the ``data`` section."""
    from st_contrast.data import SingleDatasetBatchSampler, TokenBudgetBatchSampler

    arguments: dict[str, Any] = {}
    if section.batch_sampler == "token_budget":
        arguments["batch_sampler"] = partial(
            TokenBudgetBatchSampler,
            max_tokens=section.max_tokens,
            tokenizer=model,
            prompts=prompts,
            no_duplicates=section.no_duplicates,
        )
    else:
        arguments["batch_sampler"] = section.batch_sampler
    if section.single_dataset_batches:
        arguments["multi_dataset_batch_sampler"] = partial(SingleDatasetBatchSampler, weights=weights)
    return arguments


def _geometry_probe(monitoring: MonitoringSpec) -> Any:
    """The embedding-geometry evaluator on ``monitoring.probe`` (a dataset entry like those of ``data``), if any.

    Only when monitoring is enabled: ``enabled: false`` switches the probe off too.
    """
    if not (monitoring.enabled and monitoring.probe):
        return None
    from st_contrast.callbacks import with_geometry_probe
    from st_contrast.data import load_dataset_spec

    return with_geometry_probe(None, load_dataset_spec({"name": "probe", **monitoring.probe}))
