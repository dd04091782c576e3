"""FlashTransformer inside SentenceTransformerTrainer: same training trajectory as the stock module."""

from __future__ import annotations

import torch
from datasets import Dataset
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.base.modules import Transformer
from sentence_transformers.sentence_transformer.losses import CachedMultipleNegativesRankingLoss
from sentence_transformers.sentence_transformer.modules import Pooling

from st_contrast.modules import FlashTransformer


def train(backbone, dataset: Dataset, output_dir: str) -> SentenceTransformer:
    model = SentenceTransformer(modules=[backbone, Pooling(32, "mean")], device="cpu")
    args = SentenceTransformerTrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=8,
        max_steps=3,
        learning_rate=1e-3,
        warmup_steps=0,
        seed=0,
        data_seed=0,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        dataloader_drop_last=True,
    )
    # Mini-batches of 3 make GradCache split the packed features across sequence boundaries.
    loss = CachedMultipleNegativesRankingLoss(model, mini_batch_size=3)
    SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss).train()
    return model


def test_training_matches_stock_transformer(tiny_model_factory, snli_sentences, tmp_path):
    path = tiny_model_factory("bert")  # dropout 0: both runs are deterministic
    dataset = Dataset.from_dict({"anchor": snli_sentences[:24], "positive": snli_sentences[100:124]})
    stock = train(Transformer(path), dataset, str(tmp_path / "stock"))
    flash = train(FlashTransformer(path, attention_backend="sdpa"), dataset, str(tmp_path / "flash"))

    initial = Transformer(path).model.state_dict()
    stock_state, flash_state = stock[0].model.state_dict(), flash[0].model.state_dict()
    moved = [name for name in initial if not torch.equal(initial[name], stock_state[name])]
    assert moved, "training changed no weight"
    for name in initial:
        torch.testing.assert_close(flash_state[name], stock_state[name], atol=1e-5, rtol=1e-4)
