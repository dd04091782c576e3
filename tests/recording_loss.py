"""A loss for CLI tests (``loss.name: recording_loss:RecordingLoss``): MNRL that records what each rank trained on.

Every training call appends the batch's sample indices (the label column) to ``record_dir/rank<r>.jsonl``;
``exit_after`` ends the process abruptly (``os._exit``, like a killed job) after that many calls.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch.distributed as dist
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss


class RecordingLoss(MultipleNegativesRankingLoss):
    def __init__(self, model, record_dir: str, exit_after: int | None = None) -> None:
        super().__init__(model)
        self.record_dir, self.exit_after, self.calls = Path(record_dir), exit_after, 0

    def forward(self, sentence_features, labels):
        if self.exit_after is not None and self.calls == self.exit_after:
            os._exit(17)
        self.calls += 1
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        self.record_dir.mkdir(parents=True, exist_ok=True)
        with (self.record_dir / f"rank{rank}.jsonl").open("a", encoding="utf8") as handle:
            handle.write(json.dumps({"labels": labels.tolist()}) + "\n")
        return super().forward(sentence_features, labels)
