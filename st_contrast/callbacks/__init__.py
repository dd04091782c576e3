"""Training monitoring for long contrastive runs: JSONL run logs, throughput and MFU, step-time breakdown,
embedding geometry on a probe set, weight spectra. ``st-contrast describe RUN_DIR`` plots the logs.

Quick start::

    from st_contrast.callbacks import MonitoredTrainer

    trainer = MonitoredTrainer(model=model, args=args, train_dataset=train, loss=loss,
                               monitoring={"probe": probe_pairs, "spectrum_every": 50})
    trainer.train()  # writes log.jsonl / eval.jsonl in args.output_dir
"""

from __future__ import annotations

from st_contrast.callbacks.batch_stats import BatchStats, batch_stats, sequence_lengths
from st_contrast.callbacks.flops import (
    FlopsEstimate,
    estimate_flops,
    model_flops_utilization,
    peak_flops_per_device,
    training_flops_per_token,
)
from st_contrast.callbacks.geometry import (
    EmbeddingGeometryEvaluator,
    embedding_geometry,
    pair_geometry,
    spread_geometry,
)
from st_contrast.callbacks.run_log import JsonlLogCallback, read_jsonl
from st_contrast.callbacks.spectrum import WeightSpectrumCallback, spectral_ratio, weight_spectrum
from st_contrast.callbacks.throughput import ThroughputMonitor
from st_contrast.callbacks.trainer_mixin import (
    MonitoredTrainer,
    MonitoringMixin,
    enable_monitoring,
    with_geometry_probe,
)

__all__ = [
    "BatchStats",
    "EmbeddingGeometryEvaluator",
    "FlopsEstimate",
    "JsonlLogCallback",
    "MonitoredTrainer",
    "MonitoringMixin",
    "ThroughputMonitor",
    "WeightSpectrumCallback",
    "batch_stats",
    "embedding_geometry",
    "enable_monitoring",
    "estimate_flops",
    "model_flops_utilization",
    "pair_geometry",
    "peak_flops_per_device",
    "read_jsonl",
    "sequence_lengths",
    "spectral_ratio",
    "spread_geometry",
    "training_flops_per_token",
    "weight_spectrum",
    "with_geometry_probe",
]
