"""Shared pieces of the compile tests: a ``torch.compile`` backend that records what it is given, a packed tiny BERT,
and one training step's embeddings (or cached loss) and gradients."""

from __future__ import annotations

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Pooling

from st_contrast.modules import FlashTransformer


class RecordingBackend:
    """A ``torch.compile`` backend (called once per graph it is given) that runs each graph as captured and records
    it, with the token count of its packed ``[1, tokens]`` input ids."""

    def __init__(self) -> None:
        self.graphs: list[torch.fx.GraphModule] = []
        self.token_counts: list[int | None] = []

    def __call__(self, graph: torch.fx.GraphModule, example_inputs: list) -> object:
        self.graphs.append(graph)
        ids = [t for t in example_inputs if torch.is_tensor(t) and t.dtype == torch.long and t.ndim == 2]
        self.token_counts.append(ids[0].shape[1] if ids else None)
        return graph.forward


def packed_bert(
    path: str,
    backend: str,
    compile: bool | dict = False,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
    attention_dropout: float = 0.0,
) -> SentenceTransformer:
    """The tiny BERT at ``path``, packed, in training mode, without hidden dropout (no random masks to tell two models
    apart), seeded the same for every call."""
    torch.manual_seed(0)
    backbone = FlashTransformer(
        path,
        attention_backend=backend,
        compile=compile,
        model_kwargs={"dtype": dtype} if dtype is not None else None,
        config_kwargs={"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": attention_dropout},
    )
    return SentenceTransformer(modules=[backbone, Pooling(32, "mean")], device=device).train()


def training_step(model: SentenceTransformer, texts: list[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Embeddings (fp32) and parameter gradients of ``sum(embeddings ** 2)``, on the model's device."""
    model.zero_grad(set_to_none=True)
    embeddings = model(_features(model, texts))["sentence_embedding"].float()
    embeddings.square().sum().backward()
    return embeddings.detach(), _gradients(model)


def cached_loss_step(
    model: SentenceTransformer, anchors: list[str], positives: list[str]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Loss (fp32) and parameter gradients of a CachedInfoNCELoss step in mini-batches of 4: GradCache keeps the
    mini-batches' embeddings, then embeds them again in its backward."""
    from st_contrast.losses import CachedInfoNCELoss

    model.zero_grad(set_to_none=True)
    loss = CachedInfoNCELoss(model, mini_batch_size=4)([_features(model, anchors), _features(model, positives)], None)
    loss.backward()
    return loss.detach().float(), _gradients(model)


def _features(model: SentenceTransformer, texts: list[str]) -> dict:
    features = model.preprocess(texts)
    return {key: value.to(model.device) if torch.is_tensor(value) else value for key, value in features.items()}


def _gradients(model: SentenceTransformer) -> dict[str, torch.Tensor]:
    return {name: p.grad.float() for name, p in model.named_parameters() if p.grad is not None}
