"""SimCSE: unsupervised (two dropout views of each sentence) and supervised (NLI hard negatives) InfoNCE."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from sentence_transformers import SentenceTransformer
from torch import Tensor, nn

from st_contrast.losses.cached_info_nce import CachedInfoNCELoss
from st_contrast.losses.info_nce import InfoNCELoss

__all__ = ["SimCSELoss"]


class SimCSELoss(nn.Module):
    def __init__(
        self,
        model: SentenceTransformer,
        temperature: float = 0.05,
        learnable_temperature: bool = False,
        mini_batch_size: int | None = None,
        gather_across_devices: bool = False,
    ) -> None:
        """
        SimCSE. With a single text column (unsupervised), every sentence is embedded twice, in two separate
        forward passes whose dropout masks differ, and the second view is its positive against the other
        sentences' second views. With (anchor, positive[, negative]) columns (supervised, e.g. NLI
        entailment / contradiction), it is InfoNCE with the contradictions as hard negatives.

        With ``mini_batch_size`` the loss runs through GradCache (:class:`CachedInfoNCELoss`): the two views of a
        sentence are different columns, so they are embedded in different mini-batch forward passes, each drawing
        its own dropout masks, and the gradient pass replays each pass's RNG state, so each view gets back exactly
        its own masks. The model must be in training mode with non-zero dropout for the unsupervised objective to
        be meaningful (without dropout both views are identical and the loss only pushes sentences apart).

        Args:
            model: SentenceTransformer model with dropout (e.g. BERT's default 0.1).
            temperature: Temperature (SimCSE: 0.05).
            learnable_temperature: Learn the temperature as :class:`InfoNCELoss` does (SimCSE keeps it fixed).
            mini_batch_size: If set, use GradCache with mini-batches of this size.
            gather_across_devices: Contrast against the embeddings of all ranks (with gradients).

        References:
            - SimCSE: Simple Contrastive Learning of Sentence Embeddings: https://arxiv.org/abs/2104.08821

        Requirements:
            1. Unsupervised: a single column of sentences. Supervised: (anchor, positive[, negative]) columns.

        Inputs:
            +---------------------------------------+--------+
            | Inputs                                | Labels |
            +=======================================+========+
            | (sentence,) single column             | none   |
            +---------------------------------------+--------+
            | (anchor, positive) pairs              | none   |
            +---------------------------------------+--------+
            | (anchor, positive, negative) triplets | none   |
            +---------------------------------------+--------+

        Relations:
            - The supervised form is :class:`InfoNCELoss` on triplets (``MultipleNegativesRankingLoss`` in ST).

        Example:
            ::

                from datasets import Dataset
                from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer

                from st_contrast.losses import SimCSELoss

                model = SentenceTransformer("bert-base-uncased")
                train_dataset = Dataset.from_dict({"text": ["It's nice weather outside today.", "He drove to work."]})
                loss = SimCSELoss(model, mini_batch_size=64)
                SentenceTransformerTrainer(model=model, train_dataset=train_dataset, loss=loss).train()
        """
        super().__init__()
        self.model = model
        kwargs = {
            "temperature": temperature,
            "learnable_temperature": learnable_temperature,
            "gather_across_devices": gather_across_devices,
        }
        if mini_batch_size is None:
            self.loss = InfoNCELoss(model, **kwargs)
        else:
            self.loss = CachedInfoNCELoss(model, mini_batch_size=mini_batch_size, **kwargs)
        self.mini_batch_size = mini_batch_size

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None) -> Tensor:
        sentence_features = list(sentence_features)
        if len(sentence_features) == 1:
            # Two views, as two columns (one forward on packed models, two otherwise; either way each copy draws its own
            # dropout masks); shallow copies since modules write into the dicts.
            sentence_features = [dict(sentence_features[0]), dict(sentence_features[0])]
        return self.loss(sentence_features, labels)

    @property
    def temperature(self) -> float:
        return self.loss.temperature

    @property
    def uses_gradient_cache(self) -> bool:
        """Whether the loss runs through GradCache (with ``mini_batch_size``): ST's ``MatryoshkaLoss`` then shrinks
        the cached embeddings in :attr:`calculate_loss` instead of decorating the model's forward pass."""
        return self.mini_batch_size is not None

    @property
    def calculate_loss(self) -> Callable[..., Tensor]:
        """The GradCache loss's ``calculate_loss`` (with ``mini_batch_size`` only). A wrapper that replaces it (ST's
        ``MatryoshkaLoss``) replaces it on the GradCache loss, which is the one that calls it."""
        if self.mini_batch_size is None:
            raise AttributeError("SimCSELoss without mini_batch_size does not use GradCache: no calculate_loss.")
        return self.loss.calculate_loss

    @calculate_loss.setter
    def calculate_loss(self, function: Callable[..., Tensor]) -> None:
        if self.mini_batch_size is None:
            raise AttributeError("SimCSELoss without mini_batch_size does not use GradCache: no calculate_loss.")
        self.loss.calculate_loss = function

    def get_config_dict(self) -> dict[str, Any]:
        return {**self.loss.get_config_dict(), "mini_batch_size": self.mini_batch_size}

    @property
    def citation(self) -> str:
        return """
@inproceedings{gao2021simcse,
    title={SimCSE: Simple Contrastive Learning of Sentence Embeddings},
    author={Gao, Tianyu and Yao, Xingcheng and Chen, Danqi},
    booktitle={EMNLP},
    year={2021},
}
"""
