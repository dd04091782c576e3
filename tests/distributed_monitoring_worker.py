"""Run on 2 processes (gloo, CPU) by tests/distributed_jobs.py for test_callbacks_distributed.py.

Trains a monitored tiny BERT for 4 steps on two datasets; each rank records the attention-mask sums of
the batches it trains on (independently of the monitor) in ``rank<N>.json`` of its output folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch.distributed as dist
from datasets import Dataset, DatasetDict
from loss_helpers import tiny_model
from sentence_transformers import SentenceTransformerTrainingArguments
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

from st_contrast import ContrastiveTrainer


class RecordingTrainer(ContrastiveTrainer):
    def training_step(self, model, inputs, num_items_in_batch=None):
        masks = [value for key, value in inputs.items() if key.endswith("_attention_mask")]
        self.seen.append(
            {
                "step": self.state.global_step + 1,
                "dataset": inputs.get("dataset_name"),
                "rows": masks[0].shape[0],
                "tokens": int(sum(mask.sum() for mask in masks)),
            }
        )
        return super().training_step(model, inputs, num_items_in_batch)


def run(output_dir: str, model_path: str) -> None:
    model = tiny_model(model_path)
    words = "with more words " * 3

    def texts(offset: int) -> list[str]:
        return [f"sentence {i} " + words[: (i * 11) % 40] for i in range(offset, offset + 24)]

    train = DatasetDict(
        {
            "alpha": Dataset.from_dict({"anchor": texts(0), "positive": texts(100)}),
            "beta": Dataset.from_dict({"anchor": texts(200), "positive": texts(300)}),
        }
    )
    args = SentenceTransformerTrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=3,
        max_steps=4,
        logging_steps=2,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
    )
    trainer = RecordingTrainer(model=model, args=args, train_dataset=train, loss=MultipleNegativesRankingLoss(model))
    trainer.seen = []
    trainer.train()
    Path(output_dir, f"rank{dist.get_rank()}.json").write_text(json.dumps(trainer.seen))
