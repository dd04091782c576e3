"""Shared helpers of the loss tests: tiny models, tokenized columns and gradient snapshots."""

from __future__ import annotations

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.losses.gradcache import _create_minibatch
from sentence_transformers.base.modules import Transformer
from sentence_transformers.sentence_transformer.modules import Pooling

DROPOUT = {"hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1}


def tiny_model(path: str, dropout: bool = False, seed: int = 0) -> SentenceTransformer:
    torch.manual_seed(seed)
    backbone = Transformer(path, config_kwargs=DROPOUT if dropout else {})
    return SentenceTransformer(modules=[backbone, Pooling(32, "mean")], device="cpu")


def tokenize_columns(model: SentenceTransformer, columns: list[list[str]]) -> list[dict[str, torch.Tensor]]:
    return [model.preprocess(column) for column in columns]


def gradients(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: param.grad.clone() for name, param in model.named_parameters() if param.grad is not None}


def assert_same_gradients(actual: dict, expected: dict, atol: float = 1e-5) -> None:
    assert actual.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], atol=atol, rtol=1e-4, msg=f"gradient of {name}")


def embed_like_gradcache(model, features, mini_batch_size):
    """Reference embeddings: one grad-enabled forward per mini-batch, in GradCache's order (same RNG draws)."""
    columns = []
    for feature in features:
        size = len(feature["input_ids"])
        chunks = [_create_minibatch(feature, b, b + mini_batch_size) for b in range(0, size, mini_batch_size)]
        columns.append(torch.cat([model(chunk)["sentence_embedding"] for chunk in chunks]))
    return columns
