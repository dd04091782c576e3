"""JSON-lines run log: one line per training log (``log.jsonl``) and per evaluation (``eval.jsonl``)."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from st_contrast.callbacks.summary import EVAL_LOG, RUN_INFO, SUMMARY, TRAIN_LOG, read_jsonl

logger = logging.getLogger(__name__)

__all__ = ["JsonlLogCallback", "read_jsonl"]


def _clean(value: Any) -> Any:
    """JSON-safe scalars: tensors and numpy numbers to Python, non-finite floats to None."""
    if hasattr(value, "item") and callable(value.item):
        try:
            value = value.item()
        except (ValueError, RuntimeError):
            return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return str(value)


class JsonlLogCallback(TrainerCallback):
    """Writes every log of a (Sentence Transformers) trainer as one JSON line, on rank 0, flushed per line.

    - training logs (those with ``loss``: step, epoch, learning_rate, loss and ST's loss components,
      grad_norm, and whatever :class:`~st_contrast.callbacks.MonitoringMixin` adds) go to ``log.jsonl``;
    - evaluation logs (``eval_*`` keys, evaluator metrics included) to ``eval.jsonl``;
    - the end-of-training summary (``train_runtime``...) to ``summary.json``; ``run_info.json`` records the
      run's settings.

    Resuming keeps the files consistent: at the start of training, lines of steps after the resumed
    global step (logged after the checkpoint by the interrupted run) are dropped, so every logging step
    appears exactly once. A fresh run (global step 0) starts new files.

    Works with any ``Trainer``; only the extra metrics need :class:`~st_contrast.callbacks.MonitoringMixin`.

    Args:
        output_dir: directory of the files; None uses the trainer's ``args.output_dir``.
        run_info: extra JSON-able facts for ``run_info.json``, or a callable returning them at train start.
    """

    def __init__(self, output_dir: str | os.PathLike | None = None, run_info: Any = None) -> None:
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.run_info = run_info
        self._session_lines: dict[str, list[str]] = {TRAIN_LOG: [], EVAL_LOG: []}

    def _directory(self, args) -> Path:
        return self.output_dir if self.output_dir is not None else Path(args.output_dir)

    def _append(self, args, filename: str, record: dict[str, Any]) -> None:
        directory = self._directory(args)
        directory.mkdir(parents=True, exist_ok=True)
        line = json.dumps(_clean(record), allow_nan=False)
        with (directory / filename).open("a", encoding="utf8") as handle:
            handle.write(line + "\n")
            handle.flush()
        self._session_lines[filename].append(line)

    def _truncate(self, args, global_step: int) -> None:
        """Keep the lines of steps up to ``global_step`` (none on a fresh run) plus this process's own."""
        directory = self._directory(args)
        for filename in (TRAIN_LOG, EVAL_LOG):
            path = directory / filename
            if not path.is_file():
                continue
            own = set(self._session_lines[filename])
            kept = [
                json.dumps(record)
                for record in read_jsonl(path)
                if json.dumps(record) not in own and global_step > 0 and record.get("step", 0) <= global_step
            ]
            temporary = path.with_suffix(".jsonl.tmp")
            temporary.write_text("".join(line + "\n" for line in kept + self._session_lines[filename]), "utf8")
            os.replace(temporary, path)

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        self._truncate(args, state.global_step)
        info = self.run_info() if callable(self.run_info) else (self.run_info or {})
        settings = {
            "output_dir": str(args.output_dir),
            "resumed_at_step": state.global_step,
            "max_steps": state.max_steps,
            "num_train_epochs": args.num_train_epochs,
            "per_device_train_batch_size": args.per_device_train_batch_size,
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "world_size": args.world_size,
            "learning_rate": args.learning_rate,
            "logging_steps": args.logging_steps,
            "bf16": args.bf16,
            "fp16": args.fp16,
            **info,
        }
        directory = self._directory(args)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / RUN_INFO).write_text(json.dumps(_clean(settings), indent=2) + "\n", "utf8")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record = {"step": state.global_step, "epoch": logs.get("epoch"), **logs}
        if "train_runtime" in logs:
            directory = self._directory(args)
            directory.mkdir(parents=True, exist_ok=True)
            (directory / SUMMARY).write_text(json.dumps(_clean(record), indent=2) + "\n", "utf8")
        elif "loss" in logs:
            self._append(args, TRAIN_LOG, record)
        else:
            self._append(args, EVAL_LOG, record)
