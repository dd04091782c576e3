"""GloFND on real data: a short MiniLM run on NLI triplets is not worse on STS-B dev than plain InfoNCE."""

from __future__ import annotations

import csv
import gzip

import pytest
import torch
from conftest import read_tsv_column
from datasets import Dataset
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

import st_contrast
from st_contrast.losses import GloFND, InfoNCELoss

NUM_TRIPLETS, EPOCHS, STS_PAIRS = 128, 3, 600


def sts_dev_evaluator(shared_data) -> EmbeddingSimilarityEvaluator:
    with gzip.open(shared_data / "sts" / "stsbenchmark" / "dev.tsv.gz", "rt", encoding="utf8") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))[:STS_PAIRS]
    return EmbeddingSimilarityEvaluator(
        [row[5] for row in rows], [row[6] for row in rows], [float(row[4]) / 5 for row in rows], name="sts-dev"
    )


def train(minilm_path, dataset, detector, output_dir) -> SentenceTransformer:
    torch.manual_seed(0)
    model = st_contrast.load_model(minilm_path, device="cpu")  # packed: the same model, faster on CPU
    loss = InfoNCELoss(model, learnable_temperature=False, false_negative_detector=detector)
    args = SentenceTransformerTrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=32,
        num_train_epochs=EPOCHS,
        learning_rate=5e-5,
        seed=0,
        data_seed=0,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
    )
    SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss).train()
    return model


@pytest.mark.slow
def test_glofnd_not_worse_than_plain_info_nce_on_sts(minilm_path, shared_data, tmp_path):
    path = shared_data / "nli" / "derived" / "triplets.tsv.gz"
    columns = {name: read_tsv_column(path, name, NUM_TRIPLETS) for name in ("anchor", "positive", "negative")}
    dataset = Dataset.from_dict({**columns, "label": list(range(NUM_TRIPLETS))})
    evaluator = sts_dev_evaluator(shared_data)

    plain = train(minilm_path, dataset, None, str(tmp_path / "plain"))
    detector = GloFND(num_samples=NUM_TRIPLETS, alpha=0.05, start_step=2, lr=0.2)
    with_glofnd = train(minilm_path, dataset, detector, str(tmp_path / "glofnd"))

    assert (detector.thresholds < 1.0).all(), "GloFND never adapted its thresholds"
    plain_score = evaluator(plain)[evaluator.primary_metric]
    glofnd_score = evaluator(with_glofnd)[evaluator.primary_metric]
    print(f"STS-B dev Spearman ({STS_PAIRS} pairs): plain {plain_score:.4f}, GloFND {glofnd_score:.4f}")
    assert glofnd_score >= plain_score - 0.005
