"""SigLIP: pairwise sigmoid loss with a learnable scale and bias, for text-text and (later) image-text pairs."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from sentence_transformers import SentenceTransformer
from sentence_transformers.util import all_gather_with_grad, cos_sim, get_rank, similarity_fct_name
from torch import Tensor, nn

from st_contrast.losses.merged_columns import embed_columns
from st_contrast.losses.temperature import LearnedTemperature, adopt_saved_logit_scale

__all__ = ["SigLIPLoss"]


class SigLIPLoss(nn.Module):
    def __init__(
        self,
        model: SentenceTransformer,
        temperature: float = 0.1,
        bias: float = -10.0,
        max_scale: float = 100.0,
        similarity_fct: Callable[[Tensor, Tensor], Tensor] = cos_sim,
        gather_across_devices: bool = False,
        temperature_lr: float | None = None,
    ) -> None:
        """
        Sigmoid loss for language-image (or text-text) pre-training: every (anchor, candidate) pair of the batch
        is an independent binary classification, positive for the anchor's own positive and negative for every
        other candidate (other anchors' positives and all hard negatives)::

            loss = -1/B * sum_i sum_j log sigmoid(z_ij * (t * sim(x_i, y_j) + b)),   z_ij = 1 if j == i else -1

        The scale ``t = exp(t')`` (initialised to 10, i.e. ``t' = log 10``, clamped at ``max_scale``) and the bias
        ``b`` (initialised to -10) are learned; they are parameters of the loss
        (:class:`~st_contrast.losses.temperature.LearnedTemperature`), checkpointed with its state and averaged over
        ranks like :class:`InfoNCELoss`'s temperature.
        No softmax couples the batch, so with ``gather_across_devices`` each rank scores its own anchors against
        the candidates of all ranks, which covers every pair of the global batch exactly once.

        Args:
            model: SentenceTransformer model (for image-text, a model whose modules route images and texts).
            temperature: Initial temperature ``1 / t`` (SigLIP: 0.1).
            bias: Initial bias ``b`` (SigLIP: -10).
            max_scale: Upper clamp of ``t``.
            similarity_fct: Similarity between embeddings, cosine by default (SigLIP L2-normalises).
            gather_across_devices: Score the local anchors against the candidates of all ranks (with gradients).
            temperature_lr: The scale's and bias's own learning rate under :class:`~st_contrast.ContrastiveTrainer`
                (None: the model's); they are never weight-decayed there.

        References:
            - Sigmoid Loss for Language Image Pre-Training: https://arxiv.org/abs/2303.15343

        Requirements:
            1. (anchor, positive) pairs or (anchor, positive, negative_1, ..., negative_n) n-tuples.

        Inputs:
            +-------------------------------------------------+--------+
            | Inputs                                          | Labels |
            +=================================================+========+
            | (anchor, positive) pairs                        | none   |
            +-------------------------------------------------+--------+
            | (anchor, positive, negative_1, ..., negative_n) | none   |
            +-------------------------------------------------+--------+

        Relations:
            - :class:`CLIPLoss` is the softmax (symmetric InfoNCE) counterpart.

        Example:
            ::

                from datasets import Dataset
                from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer

                from st_contrast.losses import SigLIPLoss

                model = SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2")
                train_dataset = Dataset.from_dict({
                    "anchor": ["It's nice weather outside today.", "He drove to work."],
                    "positive": ["It's so sunny.", "He took the car to the office."],
                })
                loss = SigLIPLoss(model)
                SentenceTransformerTrainer(model=model, train_dataset=train_dataset, loss=loss).train()
        """
        super().__init__()
        self.model = model
        self.similarity_fct = similarity_fct
        self.gather_across_devices = gather_across_devices
        self.learned_temperature = LearnedTemperature(temperature, max_scale, bias=bias, lr=temperature_lr).to(
            model.device
        )
        adopt_saved_logit_scale(model, self.learned_temperature)

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None) -> Tensor:
        return self.compute_loss_from_embeddings(embed_columns(self.model, sentence_features), labels)

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor | None) -> Tensor:
        if len(embeddings) < 2:
            raise ValueError(
                f"SigLIPLoss needs (anchor, positive[, negatives...]) columns, got {len(embeddings)} column(s)."
            )
        anchors, candidates = embeddings[0], embeddings[1:]
        offset = 0
        if self.gather_across_devices:
            candidates = [all_gather_with_grad(candidate) for candidate in candidates]
            offset = get_rank() * len(anchors)
        logits = self.similarity_fct(anchors, torch.cat(candidates))
        logits = logits * self.learned_temperature.scale() + self.learned_temperature.bias()
        signs = -torch.ones_like(logits)
        rows = torch.arange(len(anchors), device=logits.device)
        signs[rows, rows + offset] = 1.0
        return -F.logsigmoid(signs * logits).sum() / len(anchors)

    @property
    def temperature(self) -> float:
        return self.learned_temperature.temperature

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "temperature": self.temperature,
            "bias": float(self.learned_temperature.logit_bias.detach()),
            "max_scale": self.learned_temperature.max_scale,
            "similarity_fct": similarity_fct_name(self.similarity_fct),
            "gather_across_devices": self.gather_across_devices,
        }

    @property
    def citation(self) -> str:
        return """
@inproceedings{zhai2023sigmoid,
    title={Sigmoid Loss for Language Image Pre-Training},
    author={Zhai, Xiaohua and Mustafa, Basil and Kolesnikov, Alexander and Beyer, Lucas},
    booktitle={ICCV},
    year={2023},
}
"""
