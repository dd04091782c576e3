"""Training monitoring for long contrastive runs: JSONL run logs, throughput and MFU, step-time breakdown,
embedding geometry on a probe set, weight spectra. ``st-contrast describe RUN_DIR`` plots the logs.

:class:`st_contrast.ContrastiveTrainer` monitors by default::

    from st_contrast import ContrastiveTrainer

    trainer = ContrastiveTrainer(model=model, args=args, train_dataset=train, loss=loss,
                                 monitoring={"probe": probe_pairs, "spectrum_every": 50})
    trainer.train()  # writes log.jsonl / eval.jsonl in args.output_dir

Names load their modules on first use, so reading logs (``st-contrast describe``) does not import torch.
"""

from __future__ import annotations

from st_contrast.lazy_exports import lazy_exports

_LAZY_NAMES = {
    "BatchStats": "batch_statistics",
    "batch_stats": "batch_statistics",
    "sequence_lengths": "batch_statistics",
    "FlopsEstimate": "flops",
    "estimate_flops": "flops",
    "model_flops_utilization": "flops",
    "peak_flops_per_device": "flops",
    "training_flops_per_token": "flops",
    "EmbeddingGeometryEvaluator": "geometry",
    "embedding_geometry": "geometry",
    "pair_geometry": "geometry",
    "spread_geometry": "geometry",
    "JsonlLogCallback": "run_log",
    "read_jsonl": "summary",
    "load_run": "summary",
    "summarize_run": "summary",
    "WeightSpectrumCallback": "spectrum",
    "spectral_ratio": "spectrum",
    "weight_spectrum": "spectrum",
    "ThroughputMonitor": "throughput",
    "MonitoringMixin": "trainer_mixin",
    "enable_monitoring": "trainer_mixin",
    "with_geometry_probe": "trainer_mixin",
}

__all__ = sorted(_LAZY_NAMES)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY_NAMES)
