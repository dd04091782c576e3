"""Helpers for the adapter tests: parameter snapshots and one contrastive optimizer step."""

from __future__ import annotations

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: parameter.detach().clone() for name, parameter in model.named_parameters()}


def changed_parameters(before: dict[str, torch.Tensor], model: torch.nn.Module) -> set[str]:
    after = dict(model.named_parameters())
    assert after.keys() == before.keys()
    return {name for name, value in before.items() if not torch.equal(value, after[name].detach())}


def train_steps(
    model: SentenceTransformer,
    anchors: list[str],
    positives: list[str],
    *,
    steps: int = 2,
    lr: float = 1e-2,
    anchor_task: str | None = None,
    positive_task: str | None = None,
) -> None:
    """``steps`` AdamW steps of MNRL over *all* parameters: frozen ones get no gradient, so they must not move."""
    loss = MultipleNegativesRankingLoss(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        features = [
            model.preprocess(anchors, **({"task": anchor_task} if anchor_task else {})),
            model.preprocess(positives, **({"task": positive_task} if positive_task else {})),
        ]
        loss(features, torch.empty(0)).backward()
        optimizer.step()
    model.eval()


def embed(model: SentenceTransformer, texts: list[str], **kwargs) -> torch.Tensor:
    return model.encode(texts, convert_to_tensor=True, **kwargs)
