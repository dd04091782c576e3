"""Run on 2 processes (gloo, CPU) by tests/distributed_jobs.py for test_data_training.py: SentenceTransformerTrainer
with the st_contrast data samplers.

Each rank records, per collated batch, its dataset and rows: once for a full run, then for a run resumed from a
mid-epoch checkpoint (with and without SamplerEpochCallback), and writes them to ``<out>/rank<r>.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch.distributed as dist
from loss_helpers import tiny_model
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
from test_data_training import make_trainer, mixture

from st_contrast.compat import accept_indexed_cpu_locations


def run_trainer(model_path: str, data, out: Path, resume: str | None = None, epoch_callback: bool = True):
    model = tiny_model(model_path)
    loss = MultipleNegativesRankingLoss(model, gather_across_devices=True)  # needs equal batch sizes on all ranks
    overrides = {"max_steps": 10, "save_strategy": "steps", "save_steps": 8}
    trainer = make_trainer(model, data, loss, out, epoch_callback=epoch_callback, **overrides)
    trainer.train(resume_from_checkpoint=resume)
    batches = [
        {"dataset": features[0]["dataset_name"], "rows": [row["label"] for row in features]}
        for features, _ in trainer.data_collator.batches
    ]
    return batches, len(trainer.get_train_dataloader())


def run(output_dir: str, model_path: str, shared_data: str) -> None:
    # The stock trainer of transformers 5.17 resumes a multi-process CPU run onto "cpu:<rank>", which torch refuses;
    # ContrastiveTrainer registers this itself, the stock trainer used here needs it done by hand.
    accept_indexed_cpu_locations()
    out, rank = Path(output_dir), dist.get_rank()
    data = mixture(Path(shared_data), out / f"data-rank{rank}", add_sample_index=True, rows=(48, 32))  # label: row
    full, steps_per_epoch = run_trainer(model_path, data, out)
    dist.barrier()
    checkpoint = str(out / "out" / "checkpoint-8")
    resumed, _ = run_trainer(model_path, data, out, resume=checkpoint)
    resumed_plain, _ = run_trainer(model_path, data, out, resume=checkpoint, epoch_callback=False)
    report = {"full": full, "resumed": resumed, "resumed_without_callback": resumed_plain, "steps": steps_per_epoch}
    (out / f"rank{rank}.json").write_text(json.dumps(report))
