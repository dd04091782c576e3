"""InfoNCE with a learnable temperature that belongs to the loss and is synced across ranks."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
from sentence_transformers.util import cos_sim, get_rank, get_world_size, similarity_fct_name
from torch import Tensor

from st_contrast.losses.glofnd import GLOFND_CITATION, GloFND
from st_contrast.losses.matryoshka import in_matryoshka, refuse_per_sample_state
from st_contrast.losses.merged_columns import embed_columns
from st_contrast.losses.temperature import LearnedTemperature, ScaleFactor, adopt_saved_logit_scale

__all__ = ["InfoNCELoss"]

Direction = Literal["query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc"]


class InfoNCELoss(MultipleNegativesRankingLoss):
    def __init__(
        self,
        model: SentenceTransformer,
        temperature: float = 0.05,
        learnable_temperature: bool = True,
        max_scale: float = 100.0,
        similarity_fct: Callable[[Tensor, Tensor], Tensor] = cos_sim,
        gather_across_devices: bool = False,
        directions: tuple[Direction, ...] = ("query_to_doc",),
        partition_mode: Literal["joint", "per_direction"] = "joint",
        false_negative_detector: GloFND | None = None,
        temperature_lr: float | None = None,
    ) -> None:
        """
        :class:`~sentence_transformers.sentence_transformer.losses.MultipleNegativesRankingLoss` (InfoNCE with
        in-batch negatives, optional hard negatives, ``directions`` and ``partition_mode``) whose temperature is
        learned, as in CLIP.

        The scale ``1 / temperature`` is ``exp(logit_scale)``, clamped at ``max_scale``. ``logit_scale`` is a
        parameter of the loss (``loss.learned_temperature``, a
        :class:`~st_contrast.losses.temperature.LearnedTemperature`):
        the trainer optimizes it with the model, :class:`~st_contrast.ContrastiveTrainer` checkpoints it with the
        loss state, and the saved model never holds it, so it stays a plain Sentence Transformers model. Its
        gradient is averaged over the ranks in every backward pass, so it stays identical on every rank. A model
        saved by st_contrast 0.1 with a ``LogitScale`` module hands its learned value to the loss (the module is
        removed), and ``temperature`` is then unused.

        Args:
            model: SentenceTransformer model.
            temperature: Initial temperature (the fixed one when ``learnable_temperature=False``).
            learnable_temperature: Learn the temperature (default) or keep it fixed.
            max_scale: Upper clamp of the learned scale ``1 / temperature`` (CLIP: 100).
            similarity_fct: Similarity between embeddings, cosine by default.
            gather_across_devices: Gather the embeddings of all ranks (with gradients) so that every anchor sees
                the candidates of the whole global batch. The gradients equal those of a single process on the
                concatenated batch under DDP's gradient averaging.
            directions: Interaction terms, as in ``MultipleNegativesRankingLoss``: ``"query_to_doc"`` (required),
                ``"query_to_query"``, ``"doc_to_query"``, ``"doc_to_doc"``.
            partition_mode: ``"joint"`` (one softmax over all directions) or ``"per_direction"`` (one softmax per
                direction, averaged; ``("query_to_doc", "doc_to_query")`` with it is the symmetric CLIP loss).
            false_negative_detector: A :class:`GloFND` that removes each anchor's detected false negatives from
                its softmax denominator, in every direction, with thresholds per direction (for ``doc_to_query`` the
                anchors are the documents). It needs each row's dataset index in the label column
                (``dataset.add_column("label", list(range(len(dataset))))``).
            temperature_lr: The learned temperature's own learning rate under :class:`~st_contrast.ContrastiveTrainer`
                (None: the model's). It is never weight-decayed there.

        References:
            - Representation Learning with Contrastive Predictive Coding: https://arxiv.org/abs/1807.03748
            - Learning Transferable Visual Models From Natural Language Supervision (CLIP):
              https://arxiv.org/abs/2103.00020

        Requirements:
            1. (anchor, positive) pairs, (anchor, positive, negative) triplets or (anchor, positive, negative_1, ...,
               negative_n) n-tuples.

        Inputs:
            +----------------------------------------------------+--------------+
            | Inputs                                             | Labels       |
            +====================================================+==============+
            | (anchor, positive) pairs                           | none         |
            +----------------------------------------------------+--------------+
            | (anchor, positive, negative) triplets              | none         |
            +----------------------------------------------------+--------------+
            | (anchor, positive, negative_1, ..., negative_n)    | none         |
            +----------------------------------------------------+--------------+
            | any of the above, with ``false_negative_detector`` | sample index |
            +----------------------------------------------------+--------------+

        Relations:
            - :class:`CachedInfoNCELoss` computes the same loss and gradients with GradCache.
            - :class:`CLIPLoss` is this loss with the symmetric CLIP directions.

        Example:
            ::

                from datasets import Dataset
                from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer

                import st_contrast
                from st_contrast.losses import InfoNCELoss

                model = SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2")
                train_dataset = Dataset.from_dict({
                    "anchor": ["It's nice weather outside today.", "He drove to work."],
                    "positive": ["It's so sunny.", "He took the car to the office."],
                })
                loss = InfoNCELoss(model, temperature=0.05)
                SentenceTransformerTrainer(model=model, train_dataset=train_dataset, loss=loss).train()
                print(loss.temperature)  # the learned temperature, a parameter of the loss
                model.save("output/model")  # a plain Sentence Transformers model
        """
        if false_negative_detector is not None:
            false_negative_detector.bind(directions)  # one threshold per sample and direction
        self._fixed_scale = None
        self.learnable_temperature = learnable_temperature
        self.max_scale = max_scale
        self.base_similarity_fct = similarity_fct
        super().__init__(
            model,
            scale=1.0 / temperature,
            similarity_fct=similarity_fct
            if false_negative_detector is None
            else false_negative_detector.wrap(similarity_fct),
            gather_across_devices=gather_across_devices,
            directions=directions,
            partition_mode=partition_mode,
        )
        self.false_negative_detector = false_negative_detector
        self.learned_temperature = (
            LearnedTemperature(temperature, max_scale, lr=temperature_lr) if learnable_temperature else None
        )
        if self.learned_temperature is not None:
            self.learned_temperature.to(model.device)
            adopt_saved_logit_scale(model, self.learned_temperature)

    @property
    def scale(self) -> ScaleFactor | float:
        """The scale ``1 / temperature``: a differentiable :class:`ScaleFactor` when learned, else the fixed float.
        MNRL multiplies its (partly ``-inf``-masked) score matrices by it."""
        if self._fixed_scale is not None:
            return ScaleFactor(self._fixed_scale)
        learned = getattr(self, "learned_temperature", None)  # None until __init__ has created it
        if learned is not None:
            return ScaleFactor(learned.scale())
        return self._initial_scale

    @scale.setter
    def scale(self, value: float) -> None:
        self._initial_scale = value

    @contextmanager
    def fixed_scale(self, scale: Tensor) -> Iterator[None]:
        """Use ``scale`` (e.g. a detached leaf collecting the scale's gradient) in place of the learned one."""
        self._fixed_scale = scale
        try:
            yield
        finally:
            self._fixed_scale = None

    @contextmanager
    def false_negative_scope(self, batch_size: int, labels: Tensor | None) -> Iterator[None]:
        """Scope of one loss evaluation for the false-negative detector (a no-op without one)."""
        if self.false_negative_detector is None:
            yield
            return
        gathered = self.gather_across_devices
        offset = get_rank() * batch_size if gathered else 0
        world = batch_size * (get_world_size() if gathered else 1)
        with self.false_negative_detector.batch(labels, offset, torch.is_grad_enabled(), world):
            yield

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None) -> Tensor:
        """ST's forward, every column of a packed batch in one forward (:mod:`~st_contrast.losses.merged_columns`)."""
        if self.false_negative_detector is not None and in_matryoshka(self, self.model):
            refuse_per_sample_state(f"{type(self).__name__} with GloFND")
        return self.compute_loss_from_embeddings(embed_columns(self.model, sentence_features), labels)

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor | None) -> Tensor:
        with self.false_negative_scope(len(embeddings[0]), labels):
            return super().compute_loss_from_embeddings(embeddings, labels)

    @property
    def temperature(self) -> float:
        return 1.0 / float(self.scale)

    def get_config_dict(self) -> dict[str, Any]:
        config = super().get_config_dict()
        for key in ("scale", "hardness_mode", "hardness_strength"):
            config.pop(key)
        config["similarity_fct"] = similarity_fct_name(self.base_similarity_fct)
        detector = self.false_negative_detector
        return {
            "temperature": self.temperature,
            "learnable_temperature": self.learnable_temperature,
            "max_scale": self.max_scale,
            **config,
            "false_negative_detector": None if detector is None else detector.get_config_dict(),
        }

    @property
    def citation(self) -> str:
        return (
            (GLOFND_CITATION if self.false_negative_detector is not None else "")
            + """
@inproceedings{radford2021learning,
    title={Learning Transferable Visual Models From Natural Language Supervision},
    author={Radford, Alec and Kim, Jong Wook and Hallacy, Chris and Ramesh, Aditya and Goh, Gabriel and Agarwal,
        Sandhini and Sastry, Girish and Askell, Amanda and Mishkin, Pamela and Clark, Jack and Krueger, Gretchen and
        Sutskever, Ilya},
    booktitle={ICML},
    year={2021},
}
"""
        )
