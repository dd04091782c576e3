"""One training run from a configuration: evaluate, train (resuming when asked), save, evaluate, report."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from functools import partial
from pathlib import Path
from typing import Any

import yaml
from accelerate import PartialState
from transformers import set_seed

from st_contrast.training.arguments import build_training_arguments
from st_contrast.training.builders import apply_adapters, build_loss, build_model, compile_model
from st_contrast.training.checkpoints import (
    STAGING_DIR,
    CheckpointChoice,
    newest_complete_checkpoint,
    recover_staging,
)
from st_contrast.training.config import changed_keys, dump_config
from st_contrast.training.specs import DataSection, EvaluationSpec, MonitoringSpec, RunConfig
from st_contrast.training.trainer import ContrastiveTrainer
from st_contrast.training.validation import ConfigError

__all__ = [
    "CONFIG_NAME",
    "FINAL_MODEL_DIR",
    "METRICS_NAME",
    "RUN_ARTIFACTS",
    "finished_run",
    "restart_run",
    "train_from_config",
]

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.yaml"
METRICS_NAME = "metrics.json"
FINAL_MODEL_DIR = "model"


RUN_ARTIFACTS = (
    CONFIG_NAME,
    METRICS_NAME,
    FINAL_MODEL_DIR,
    "log.jsonl",
    "eval.jsonl",
    "run_info.json",
    "summary.json",
    "eval",
    "plots",
    STAGING_DIR,
)
"""What a run writes into its output directory besides ``checkpoint-*`` (``--restart`` removes exactly these)."""


def _checkpoint_to_resume(output_dir: Path, resume: str | bool) -> CheckpointChoice:
    choice = newest_complete_checkpoint(output_dir)
    checkpoints = sorted(output_dir.glob("checkpoint-*")) if output_dir.is_dir() else []
    if resume is False and checkpoints:
        raise ConfigError(
            f"{output_dir} already holds checkpoints ({checkpoints[-1].name}) and resume is false: training from "
            "scratch there would overwrite them. Use another output_dir, --restart, or resume."
        )
    if resume is True and choice.path is None:
        damaged = "".join(f"; {path}: {problem}" for path, problem in choice.skipped)
        raise ConfigError(f"resume is true but {output_dir} has no complete checkpoint-* to resume from{damaged}.")
    return choice


def finished_run(output_dir: Path) -> dict[str, Any] | None:
    """The metrics of a run that completed in ``output_dir`` (trained, final model written), else None."""
    metrics_path = output_dir / METRICS_NAME
    if not (metrics_path.is_file() and (output_dir / FINAL_MODEL_DIR / "modules.json").is_file()):
        return None
    metrics = json.loads(metrics_path.read_text(encoding="utf8"))
    return metrics if "train" in metrics else None


def restart_run(output_dir: Path) -> None:
    """Remove a run's checkpoints and :data:`RUN_ARTIFACTS` from ``output_dir`` (nothing else there)."""
    if not output_dir.is_dir():
        return
    for path in [*output_dir.glob("checkpoint-*"), *(output_dir / name for name in RUN_ARTIFACTS)]:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _evaluate(model: Any, tasks: list[Any], section: EvaluationSpec, output_dir: Path, stage: str) -> dict[str, Any]:
    from st_contrast.evaluation import evaluate_model

    return evaluate_model(model, tasks, batch_size=section.batch_size, output_folder=str(output_dir / "eval" / stage))


def _write_metrics(path: Path, metrics: dict[str, Any]) -> None:
    """Write ``metrics.json`` atomically (a temporary file renamed over it)."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(metrics, indent=2, sort_keys=False) + "\n", encoding="utf8")
    os.replace(temporary, path)


def train_from_config(config: RunConfig | dict[str, Any], *, restart: bool = False) -> dict[str, Any]:
    """Run the configured training and return the metrics that are also written to ``metrics.json``.

    Order: everything that can be checked without loading a model is checked first (the configuration, the model's
    architecture and attention backend, the evaluation files), then the data is read (its errors name file and
    line), then the model; only then is anything written. Rerunning continues from the newest *complete*
    ``checkpoint-*`` of ``output_dir`` (``resume: auto``) with the model, optimizer, scheduler, RNG, data order and
    loss state; the "before" evaluation is not repeated. A run that already finished is not trained again: its
    metrics are returned (``restart=True`` starts it over). The final model is written to ``output_dir/model`` as a
    plain Sentence Transformers model (:func:`st_contrast.export_model`).
    """
    from st_contrast.data import build_training_data
    from st_contrast.model_io import export_model
    from st_contrast.training.builders import resolve_model_path
    from st_contrast.training.preflight import preflight

    config = config if isinstance(config, RunConfig) else RunConfig.from_dict(config)
    state = PartialState()
    output_dir = Path(config.output_dir)
    if restart:
        if state.is_main_process:
            restart_run(output_dir)
        state.wait_for_everyone()
    elif (done := finished_run(output_dir)) is not None:
        if config.resume is False:
            raise ConfigError(f"{output_dir} holds a finished run and resume is false: use --restart or another one.")
        _say(state, f"{output_dir} holds a finished run (model/, metrics.json): nothing to train; --restart redoes it.")
        return done
    if state.is_main_process:
        for path in recover_staging(output_dir):  # a kill between a checkpoint's last write and its rename
            _say(state, f"recovered {path}: complete in {STAGING_DIR} when the last run stopped")
    state.wait_for_everyone()
    choice = _checkpoint_to_resume(output_dir, config.resume)
    for path, problem in choice.skipped:
        _say(state, f"skipping the damaged checkpoint {path}: {problem}")
    if config.data.prepare is not None:
        if state.is_main_process:
            _prepare_data(config.data.prepare)
        state.wait_for_everyone()
    model_path = resolve_model_path(config.model.name_or_path)
    tasks = preflight(config, model_path)

    data_section = config.data
    sample_index = data_section.sample_index
    data = build_training_data(
        [_with_fallback(spec) for spec in data_section.datasets],
        add_sample_index=config.loss.needs_sample_index if sample_index == "auto" else bool(sample_index),
    )
    for bad in data.bad_rows.values():
        if bad.total:
            _say(state, bad.summary())
    set_seed(config.seed)
    model = build_model(config.model)
    apply_adapters(model, config.adapters)
    compile_model(model, config.model)
    loss = build_loss(model, config.loss, num_samples=data.num_samples)
    sampler_arguments = _sampler_arguments(data_section, model, data.prompts, data.weights)
    args = build_training_arguments(
        config.output_dir, config.training, seed=config.seed, prompts=data.prompts or None, **sampler_arguments
    )

    metrics_path = output_dir / METRICS_NAME
    metrics: dict[str, Any] = (
        json.loads(metrics_path.read_text(encoding="utf8")) if choice.path and metrics_path.is_file() else {}
    )
    if state.is_main_process:  # from here on the run writes into output_dir
        output_dir.mkdir(parents=True, exist_ok=True)
        if choice.path:
            if kept := _keep_the_configuration_resumed_from(output_dir / CONFIG_NAME, config.raw, choice.step):
                _say(state, kept)
        dump_config(config.raw, output_dir / CONFIG_NAME)
    evaluation = config.evaluation
    if tasks and evaluation.before and "before" not in metrics:
        if state.is_main_process:
            metrics["before"] = _evaluate(model, tasks, evaluation, output_dir, "before")
            _write_metrics(metrics_path, metrics)
        state.wait_for_everyone()

    trainer = ContrastiveTrainer(
        model=model,
        args=args,
        train_dataset=data.dataset,
        loss=loss,
        evaluator=_geometry_probe(config.monitoring),
        monitoring=_monitoring_options(config.monitoring, output_dir),
    )
    if choice.path:
        total = json.loads((Path(choice.path) / "trainer_state.json").read_text(encoding="utf8")).get("max_steps")
        _say(state, f"resuming from {choice.path}, step {choice.step} of {total}")
    result = trainer.train(resume_from_checkpoint=choice.path)
    metrics["train"] = result.metrics
    if bad_rows := _bad_rows(data, trainer):
        metrics["data"] = {"bad_rows": {name: bad.as_dict() for name, bad in bad_rows.items()}}
        for bad in bad_rows.values():
            if data.streaming and bad.total:
                _say(state, f"while streaming, {bad.summary()}")
    if state.is_main_process:
        try:
            report = export_model(trainer.model, output_dir / FINAL_MODEL_DIR, verify=False)
        except ValueError as error:  # no plain form can be exact (nothing was written): save st_contrast's own
            trainer.model.save(str(output_dir / FINAL_MODEL_DIR))
            logger.warning("The final model needs st_contrast.load_model: %s", error)
        else:
            if not report.plain:
                logger.warning("The final model needs st_contrast.load_model: %s", " ".join(report.notes))
    state.wait_for_everyone()

    if tasks and evaluation.after:
        if state.is_main_process:
            metrics["after"] = _evaluate(model, tasks, evaluation, output_dir, "after")
        state.wait_for_everyone()
    if state.is_main_process:
        _write_metrics(metrics_path, metrics)
    return metrics


def _prepare_data(prepare: dict[str, Any]) -> None:
    """Run ``data.prepare``: a function that writes the run's data (e.g. the offline image-text sets)."""
    import importlib

    module_name, _, function = prepare["function"].partition(":")
    getattr(importlib.import_module(module_name), function)(**(prepare.get("kwargs") or {}))


def _bad_rows(data: Any, trainer: ContrastiveTrainer) -> dict[str, Any]:
    """The rows ``on_bad_rows: skip`` left out, per dataset that skips (a stream's counted on every rank)."""
    skipping = [spec.name for spec in data.specs if spec.on_bad_rows == "skip"]
    if not skipping:
        return {}
    if data.streaming:
        from st_contrast.data import gather_bad_rows

        counted = gather_bad_rows(trainer.train_dataset)
    else:
        counted = data.bad_rows
    return {name: counted[name] for name in skipping}


def _keep_the_configuration_resumed_from(path: Path, config: dict[str, Any], step: int) -> str | None:
    """A run resumed with another configuration than the one it was written with: keep the earlier file beside the new
    one and return a line naming what changed (a changed batch size, data or seed continues with another data order);
    None when nothing changed."""
    if not path.is_file():
        return None
    earlier = yaml.safe_load(path.read_text(encoding="utf8"))
    changed = changed_keys(earlier, config)
    if not changed:
        return None
    kept = path.with_name(f"config.before-step-{step}.yaml")
    os.replace(path, kept)
    return (
        f"resuming at step {step} with a changed configuration ({', '.join(changed)}); the one the run was started "
        f"with is kept as {kept.name}"
    )


def _say(state: PartialState, message: str) -> None:
    """One line on stderr from the main process (what the run does, not a warning)."""
    if state.is_main_process:
        print(f"st-contrast train: {message}", file=sys.stderr)


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
    from st_contrast.data.urls import is_url

    spec = dict(spec)
    fallback = spec.pop("fallback", None)
    path = str(spec.get("path", ""))
    if fallback and not is_url(path) and not Path(path).exists():
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
