"""The trainer side of monitoring: the hooks a callback cannot reach, and a one-call set-up."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

from st_contrast.callbacks.geometry import EmbeddingGeometryEvaluator
from st_contrast.callbacks.run_log import JsonlLogCallback
from st_contrast.callbacks.spectrum import WeightSpectrumCallback
from st_contrast.callbacks.throughput import ThroughputMonitor
from st_contrast.compat import training_progress_bar

logger = logging.getLogger(__name__)

__all__ = ["MonitoringMixin", "enable_monitoring", "with_geometry_probe"]

_PROGRESS_KEYS = {"tokens_per_second": "tok/s", "samples_per_second": "samples/s", "mfu": "mfu", "step_time": "s/step"}


class MonitoringMixin:
    """Trainer mixin that lets callbacks add metrics to the training logs, and feeds :class:`ThroughputMonitor`.

    A ``TrainerCallback`` sees neither the batches nor the time each part of a step takes, and cannot add
    metrics to what ``report_to`` receives. This mixin overrides three ``transformers.Trainer`` hooks, each
    calling ``super()`` so it composes with other trainer subclasses:

    - ``get_batch_samples``: times the wait for the step's batches and counts their samples and real tokens;
    - ``training_step``: times forward + backward;
    - ``log``: merges ``metrics_for_log(args, state)`` of every callback that defines it into each training
      log (the one with ``loss``), before Sentence Transformers and transformers pass it on to the callbacks
      (``report_to`` integrations, the progress bar, :class:`JsonlLogCallback`), and shows throughput and MFU
      as the progress bar's postfix.

    It also adds ST's ``dataset_name`` column to every ``DatasetDict`` (ST adds it only for a dict of losses,
    prompts or router mappings), so samples and tokens are counted per dataset.

    Without monitoring callbacks (see :func:`enable_monitoring`) the hooks only call ``super()``.

    Example:
        ::

            class MyTrainer(MonitoringMixin, SentenceTransformerTrainer): ...

            trainer = MyTrainer(model=model, args=args, train_dataset=train, loss=loss)
            enable_monitoring(trainer, probe=probe_sentences, spectrum_every=100)
            trainer.train()
    """

    def _monitoring_callback(self, kind: type) -> Any:
        for callback in self.callback_handler.callbacks:
            if isinstance(callback, kind):
                return callback
        return None

    def should_dataset_name_column_be_added(self, dataset, args, loss) -> bool:
        from datasets import DatasetDict, IterableDatasetDict

        return isinstance(dataset, (DatasetDict, IterableDatasetDict)) or super().should_dataset_name_column_be_added(
            dataset, args, loss
        )

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        monitor = self._monitoring_callback(ThroughputMonitor)
        if monitor is None:
            return super().get_batch_samples(epoch_iterator, num_batches, device)
        start = monitor.begin_fetch()
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        monitor.end_fetch(batch_samples, start)
        return batch_samples, num_items_in_batch

    def training_step(self, model, inputs, num_items_in_batch=None):
        monitor = self._monitoring_callback(ThroughputMonitor)
        if monitor is None:
            return super().training_step(model, inputs, num_items_in_batch)
        start = time.perf_counter()
        loss = super().training_step(model, inputs, num_items_in_batch)
        monitor.end_compute(start)
        return loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            logs = dict(logs)
            for callback in self.callback_handler.callbacks:
                metrics_for_log = getattr(callback, "metrics_for_log", None)
                if callable(metrics_for_log):
                    logs.update(metrics_for_log(self.args, self.state))
            progress = self._monitoring_callback(ProgressCallback)
            bar = training_progress_bar(progress)
            shown = {label: logs[key] for key, label in _PROGRESS_KEYS.items() if key in logs}
            if bar is not None and shown:
                bar.set_postfix({label: f"{value:.3g}" for label, value in shown.items()}, refresh=False)
        if start_time is not None:
            return super().log(logs, start_time)
        return super().log(logs)


def with_geometry_probe(evaluator: Any, probe: Any, name: str = "geometry") -> Any:
    """``evaluator`` plus an :class:`EmbeddingGeometryEvaluator` on ``probe`` (just the latter if ``evaluator``
    is None), keeping ``evaluator``'s primary score as the combined one (``metric_for_best_model``).

    Pass the result as the trainer's ``evaluator`` when constructing it with an ``eval_strategy`` but no
    other evaluation: Sentence Transformers refuses an ``eval_strategy`` with nothing to evaluate.
    """
    from sentence_transformers.base.evaluation.sequential import SequentialEvaluator

    geometry = EmbeddingGeometryEvaluator(probe, name=name)
    # a probe given again replaces the earlier one
    if isinstance(evaluator, EmbeddingGeometryEvaluator):
        evaluator = None
    elif isinstance(evaluator, SequentialEvaluator):
        kept = [e for e in evaluator.evaluators if not isinstance(e, EmbeddingGeometryEvaluator)]
        evaluator = kept[0] if len(kept) == 1 else (SequentialEvaluator(kept) if kept else None)
    if evaluator is None:
        return geometry
    return SequentialEvaluator([evaluator, geometry], main_score_function=lambda scores: scores[0])


def enable_monitoring(
    trainer: MonitoringMixin,
    output_dir: str | os.PathLike | None = None,
    *,
    probe: Any = None,
    probe_name: str = "geometry",
    spectrum_every: int = 0,
    spectrum_patterns: Sequence[str] | None = None,
    peak_flops: float | None = None,
    synchronize: bool = True,
    throughput: bool = True,
) -> list[TrainerCallback]:
    """Turn on run monitoring for a trainer with :class:`MonitoringMixin`; call it before ``train()``.

    Adds :class:`JsonlLogCallback` (``log.jsonl``, ``eval.jsonl``, ``summary.json``, ``run_info.json`` in
    ``output_dir``), :class:`ThroughputMonitor` (tokens/s, samples/s, MFU, step-time breakdown, tokens seen
    per dataset), a :class:`WeightSpectrumCallback` when ``spectrum_every > 0``, and an
    :class:`EmbeddingGeometryEvaluator` on ``probe`` (alongside the trainer's evaluator) when a probe is given.
    Calling it again replaces the earlier monitoring callbacks.

    Args:
        trainer: a :class:`~st_contrast.ContrastiveTrainer`, or any ``class X(MonitoringMixin, ...Trainer)``.
        output_dir: where the log files go; default ``trainer.args.output_dir``.
        probe: texts for the geometry evaluator (see :class:`EmbeddingGeometryEvaluator`); it runs at the
            trainer's evaluation steps. ST refuses an ``eval_strategy`` without an evaluator or eval dataset
            at construction: then pass ``evaluator=with_geometry_probe(None, probe)`` to the trainer instead.
        probe_name: metric prefix of the geometry evaluator.
        spectrum_every: compute the weight spectrum every this many optimizer steps (0: never).
        spectrum_patterns: regular expressions choosing the weight matrices (default: all ``nn.Linear``).
        peak_flops: peak FLOPs of one device for MFU; default: known for H100, H200, A100, else no MFU.
        synchronize: wait for the GPU at timing boundaries so the step-time parts are exact.
        throughput: add the :class:`ThroughputMonitor`.

    Returns:
        The callbacks added.
    """
    if not isinstance(trainer, MonitoringMixin):
        raise TypeError(
            f"enable_monitoring needs a trainer with MonitoringMixin, got {type(trainer).__name__}: a plain "
            "SentenceTransformerTrainer cannot add metrics to its logs. Use st_contrast.ContrastiveTrainer, "
            "or define `class MyTrainer(MonitoringMixin, SentenceTransformerTrainer)`."
        )
    for kind in (JsonlLogCallback, ThroughputMonitor, WeightSpectrumCallback):
        while trainer._monitoring_callback(kind) is not None:
            trainer.remove_callback(kind)

    train_dataset = trainer.train_dataset
    if isinstance(train_dataset, dict):
        dataset_names = sorted(train_dataset.keys())
    else:  # a StreamingDataset names the datasets of its rows (None for one dataset)
        names = getattr(train_dataset, "dataset_names", None)
        dataset_names = sorted(names) if names else None
    added: list[TrainerCallback] = []
    monitor = ThroughputMonitor(peak_flops, synchronize, dataset_names) if throughput else None

    def run_info() -> dict[str, Any]:
        evaluator = trainer.evaluator
        info: dict[str, Any] = {"datasets": dataset_names, "spectrum_every": spectrum_every}
        info["evaluator"] = type(evaluator).__name__ if evaluator is not None else None
        if monitor is not None:
            info.update(monitor.run_info())
        info["cuda"] = torch.cuda.is_available()
        return info

    # the monitor first: the JSONL callback's run_info reads what it found at train begin
    if monitor is not None:
        added.append(monitor)
    if spectrum_every:
        added.append(WeightSpectrumCallback(spectrum_every, spectrum_patterns))
    added.append(JsonlLogCallback(output_dir, run_info=run_info))
    for callback in added:
        trainer.add_callback(callback)

    if probe is not None:
        trainer.evaluator = with_geometry_probe(trainer.evaluator, probe, probe_name)
        if trainer.args.eval_strategy == "no":
            logger.warning("The geometry probe runs at evaluation steps, but eval_strategy='no': set eval_strategy.")
    return added
