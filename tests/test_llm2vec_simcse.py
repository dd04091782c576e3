"""Real learning: a tiny bidirectional Llama trained with SimCSE on SNLI sentences gets better at STS-B."""

from __future__ import annotations

import csv
import gzip

import pytest
import torch
from conftest import read_tsv_column
from datasets import Dataset
from scipy.stats import spearmanr
from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

from st_contrast.losses import SimCSELoss
from st_contrast.recipes import llm2vec_model

STEPS, BATCH, LR = 300, 32, 1e-3


def stsb_dev_spearman(model, shared_data, limit: int = 600) -> float:
    with gzip.open(shared_data / "sts" / "stsbenchmark" / "dev.tsv.gz", "rt", encoding="utf8") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))[:limit]
    first, second = (model.encode([row[c] for row in rows], batch_size=64, convert_to_tensor=True) for c in (5, 6))
    cosine = torch.nn.functional.cosine_similarity(first, second).numpy()
    return float(spearmanr(cosine, [float(row[4]) for row in rows]).statistic) * 100


@pytest.mark.slow
def test_simcse_on_a_bidirectional_llama_learns(tiny_model_factory, shared_data, tmp_path):
    torch.manual_seed(0)
    model = llm2vec_model(tiny_model_factory("llama"), attention_dropout=0.3, max_seq_length=24, device="cpu")
    before = stsb_dev_spearman(model, shared_data)
    train_file = shared_data / "nli" / "snli_sample_20k" / "train.tsv.gz"
    texts = read_tsv_column(train_file, "premise") + read_tsv_column(train_file, "hypothesis")
    sentences = list(dict.fromkeys(texts))[: STEPS * BATCH]
    args = SentenceTransformerTrainingArguments(
        str(tmp_path),
        max_steps=STEPS,
        per_device_train_batch_size=BATCH,
        learning_rate=LR,
        warmup_steps=0.1,
        logging_steps=10,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        seed=0,
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=Dataset.from_dict({"text": sentences}), loss=SimCSELoss(model)
    )
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    after = stsb_dev_spearman(model, shared_data)
    print(f"SimCSE tiny Llama: STS-B dev (600 pairs) Spearman {before:.2f} -> {after:.2f}; loss {losses}")
    assert sum(losses[-3:]) < sum(losses[:3]), losses
    assert after > before + 3.0, (before, after)
