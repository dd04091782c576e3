"""Throughput, model FLOPs utilisation and the step-time breakdown of a training run."""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
import torch.distributed as dist
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from st_contrast.callbacks.batch_statistics import batch_stats
from st_contrast.callbacks.flops import FlopsEstimate, estimate_flops, peak_flops_per_device, training_precision

logger = logging.getLogger(__name__)

__all__ = ["ThroughputMonitor"]

_TIMERS = ("step", "data", "fwd_bwd", "optimizer")


class ThroughputMonitor(TrainerCallback, ExportableState):
    """Counts samples and real tokens (per dataset, summed over ranks), times each optimizer step, and
    adds throughput, MFU and the step-time breakdown to every training log.

    A trainer with :class:`~st_contrast.callbacks.MonitoringMixin` feeds it (the batches it fetches and
    the time of each ``training_step``) and merges :meth:`metrics_for_log` into its logs, so the metrics
    reach ``report_to`` (TensorBoard, W&B...), the progress bar and ``log.jsonl``. Use
    :func:`~st_contrast.callbacks.enable_monitoring` rather than adding it by hand.

    Metrics, per logging interval (time is measured on rank 0; samples and tokens are summed over ranks):

    - ``tokens_per_second``, ``samples_per_second``: real (non-padding) tokens and samples over the summed
      step times (evaluation and checkpointing excluded).
    - ``mfu``: :func:`~st_contrast.callbacks.flops.training_flops_per_token` FLOPs of those tokens per
      second, over ``peak_flops`` times the number of processes; only when the peak is known.
    - ``step_time``, ``data_time``, ``fwd_bwd_time``, ``optimizer_time``: mean seconds per optimizer step
      waiting for batches, in ``training_step`` (forward and backward of every micro-batch), and from
      the last backward to the end of the step (clipping, optimizer, scheduler, zero_grad). With
      ``synchronize=True`` each boundary waits for the GPU, so the parts are attributed correctly.
    - ``tokens_seen``, ``samples_seen`` and ``tokens_seen/<dataset>``, ``samples_seen/<dataset>``:
      cumulative totals, saved in checkpoints (``trainer_state.json``) and restored on resume.

    Args:
        peak_flops: peak FLOPs of one device; None looks it up for H100, H200 and A100 GPUs
            (:func:`~st_contrast.callbacks.flops.peak_flops_per_device`) and otherwise leaves ``mfu`` out.
        synchronize: wait for the GPU at every timing boundary (three syncs per step).
        dataset_names: names of the training datasets (the keys of a ``DatasetDict``), for per-dataset counts.
    """

    def __init__(
        self, peak_flops: float | None = None, synchronize: bool = True, dataset_names: list[str] | None = None
    ) -> None:
        if peak_flops is not None and peak_flops <= 0:
            raise ValueError(f"peak_flops must be positive FLOPs per device (e.g. 989e12), got {peak_flops}.")
        self.peak_flops = peak_flops
        self.synchronize = synchronize
        self.dataset_names = list(dataset_names or [])
        self.counters: dict[str, Any] = self._zero_counters()
        self.flops: FlopsEstimate | None = None
        self.resolved_peak_flops: float | None = peak_flops
        self._device = torch.device("cpu")
        self._world_size = 1
        self._reset_pending()
        self._reset_interval()
        self._step_start: float | None = None
        self._compute_end: float | None = None

    # ---- checkpointed state ----
    def _zero_counters(self) -> dict[str, Any]:
        return {"samples": 0, "tokens": 0, "per_dataset": {name: [0, 0] for name in self.dataset_names}}

    def state(self) -> dict:
        return {
            "args": {
                "peak_flops": self.peak_flops,
                "synchronize": self.synchronize,
                "dataset_names": self.dataset_names,
            },
            "attributes": {"counters": self.counters},
        }

    def _reset_pending(self) -> None:
        self._pending_samples = 0
        self._pending_tokens: torch.Tensor | int = 0
        self._pending_squares: torch.Tensor | int = 0
        self._pending_per_dataset: dict[str, list] = {name: [0, 0] for name in self.dataset_names}

    def _reset_interval(self) -> None:
        self._interval = {"steps": 0, "samples": 0, "tokens": 0, "squares": 0, **{name: 0.0 for name in _TIMERS}}

    # ---- fed by MonitoringMixin ----
    def _sync(self) -> None:
        if self.synchronize and self._device.type == "cuda":
            torch.cuda.synchronize(self._device)

    def begin_fetch(self) -> float:
        """Called before the trainer fetches the batches of an optimizer step; returns the start time."""
        now = time.perf_counter()
        if self._step_start is None:
            self._step_start = now
        return now

    def end_fetch(self, batches: list[dict[str, Any]], start: float) -> None:
        """Count the fetched batches and book the wait since ``start`` as data time."""
        self._sync()
        self._interval["data"] += time.perf_counter() - start
        for batch in batches:
            stats = batch_stats(batch) if isinstance(batch, dict) else None
            if stats is None:
                continue
            self._pending_samples += stats.samples
            self._pending_tokens = self._pending_tokens + stats.tokens
            self._pending_squares = self._pending_squares + stats.sum_squared_lengths
            if stats.dataset_name is not None:
                if stats.dataset_name not in self._pending_per_dataset:
                    raise ValueError(
                        f"Batch from dataset {stats.dataset_name!r}, which is not among the dataset names given "
                        f"to the monitor ({self.dataset_names}). Call enable_monitoring after the trainer has its "
                        "final train_dataset."
                    )
                entry = self._pending_per_dataset[stats.dataset_name]
                entry[0] += stats.samples
                entry[1] = entry[1] + stats.tokens

    def end_compute(self, start: float) -> None:
        """Book the time since ``start`` (one ``training_step``) as forward + backward time."""
        self._sync()
        self._compute_end = time.perf_counter()
        self._interval["fwd_bwd"] += self._compute_end - start

    # ---- callback events ----
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._device = torch.device(args.device)
        self._world_size = max(int(getattr(args, "world_size", 1) or 1), 1)
        name = type(self).__name__
        saved = state.stateful_callbacks.get(name) if isinstance(state.stateful_callbacks, dict) else None
        if isinstance(saved, list):
            saved = saved[0] if saved else None
        if state.global_step > 0 and isinstance(saved, dict) and "counters" in saved.get("attributes", {}):
            self.counters = saved["attributes"]["counters"]
            for dataset in self.dataset_names:
                self.counters["per_dataset"].setdefault(dataset, [0, 0])
        elif state.global_step == 0:
            self.counters = self._zero_counters()
        else:
            logger.warning("The checkpoint has no saved ThroughputMonitor counters: tokens_seen restarts from 0.")
        # transformers indexes this dict by name when it saves a checkpoint; a resumed state may lack it
        if isinstance(state.stateful_callbacks, dict):
            state.stateful_callbacks.setdefault(name, self.state())
        self._reset_pending()
        self._reset_interval()
        self._step_start = self._compute_end = None
        if model is not None and self.flops is None:
            try:
                self.flops = estimate_flops(model)
            except ValueError as error:
                logger.warning("No MFU: %s", error)
        if self.peak_flops is None:
            self.resolved_peak_flops = peak_flops_per_device(self._device, training_precision(args))
            if self.resolved_peak_flops is None:
                logger.info("No MFU: unknown peak FLOPs for %s; pass peak_flops= to enable_monitoring.", self._device)

    def on_step_end(self, args, state, control, **kwargs):
        self._sync()
        now = time.perf_counter()
        if self._step_start is not None:
            self._interval["step"] += now - self._step_start
            self._interval["steps"] += 1
        if self._compute_end is not None:
            self._interval["optimizer"] += now - self._compute_end
        self._step_start = self._compute_end = None
        if control.should_log or control.should_save or control.should_evaluate:
            self.flush()

    def on_epoch_end(self, args, state, control, **kwargs):
        if control.should_log or control.should_save or control.should_evaluate:
            self.flush()

    def flush(self) -> None:
        """Sum the pending counts over ranks (one small all-reduce) into the interval and the totals.

        Every rank must call it at the same step: the monitor does so at steps where the trainer logs,
        saves or evaluates, which all ranks agree on.
        """
        names = self.dataset_names
        values = [self._pending_samples, self._pending_tokens, self._pending_squares]
        for name in names:
            values.extend(self._pending_per_dataset[name])
        vector = torch.stack([torch.as_tensor(v, dtype=torch.int64, device=self._device).reshape(()) for v in values])
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(vector)
        samples, tokens, squares, *per_dataset = vector.tolist()
        self._interval["samples"] += samples
        self._interval["tokens"] += tokens
        self._interval["squares"] += squares
        self.counters["samples"] += samples
        self.counters["tokens"] += tokens
        for index, name in enumerate(names):
            entry = self.counters["per_dataset"].setdefault(name, [0, 0])
            entry[0] += per_dataset[2 * index]
            entry[1] += per_dataset[2 * index + 1]
        self._reset_pending()

    def metrics_for_log(self, args, state) -> dict[str, float]:
        """The metrics of the interval since the previous training log (then reset)."""
        interval = self._interval
        metrics: dict[str, float] = {"tokens_seen": self.counters["tokens"], "samples_seen": self.counters["samples"]}
        for name in self.dataset_names:
            samples, tokens = self.counters["per_dataset"].get(name, [0, 0])
            metrics[f"samples_seen/{name}"] = samples
            metrics[f"tokens_seen/{name}"] = tokens
        steps, seconds = interval["steps"], interval["step"]
        if steps and seconds > 0:
            metrics["tokens_per_second"] = interval["tokens"] / seconds
            metrics["samples_per_second"] = interval["samples"] / seconds
            for timer in _TIMERS:
                metrics[f"{timer}_time"] = interval[timer] / steps
            if self.flops is not None and self.resolved_peak_flops:
                flops = self.flops.training_flops(interval["tokens"], interval["squares"])
                metrics["mfu"] = flops / seconds / (self.resolved_peak_flops * self._world_size)
        self._reset_interval()
        return metrics

    def run_info(self) -> dict[str, Any]:
        """Static facts for ``run_info.json``: the FLOPs estimate and the peak used for MFU."""
        return {
            "flops": self.flops.to_dict() if self.flops else None,
            "peak_flops_per_device": self.resolved_peak_flops,
            "world_size": self._world_size,
            "device": torch.cuda.get_device_name(self._device) if self._device.type == "cuda" else str(self._device),
        }
