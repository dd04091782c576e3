"""InfoNCE with a learnable temperature that is synced across ranks and saved with the model."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
from sentence_transformers.util import cos_sim
from torch import Tensor

from st_contrast.modules.temperature import LogitScale, find_or_add_logit_scale

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
    ) -> None:
        """
        :class:`~sentence_transformers.sentence_transformer.losses.MultipleNegativesRankingLoss` (InfoNCE with
        in-batch negatives, optional hard negatives, ``directions`` and ``partition_mode``) whose temperature is
        learned, as in CLIP.

        The scale ``1 / temperature`` is ``exp(logit_scale)``, clamped at ``max_scale``. ``logit_scale`` is a
        parameter of a :class:`~st_contrast.modules.LogitScale` module appended to ``model`` (or found there,
        when the model was saved by an earlier run), so the optimizer trains it with the model,
        ``model.save(dir)`` writes it and ``st_contrast.load_model(dir)`` restores it. Its gradient is averaged
        over the ranks in every backward pass, so it stays identical on every rank.

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

        References:
            - Representation Learning with Contrastive Predictive Coding: https://arxiv.org/abs/1807.03748
            - Learning Transferable Visual Models From Natural Language Supervision (CLIP):
              https://arxiv.org/abs/2103.00020

        Requirements:
            1. (anchor, positive) pairs, (anchor, positive, negative) triplets or (anchor, positive, negative_1, ...,
               negative_n) n-tuples.

        Inputs:
            +-------------------------------------------------+--------+
            | Inputs                                          | Labels |
            +=================================================+========+
            | (anchor, positive) pairs                        | none   |
            +-------------------------------------------------+--------+
            | (anchor, positive, negative) triplets           | none   |
            +-------------------------------------------------+--------+
            | (anchor, positive, negative_1, ..., negative_n) | none   |
            +-------------------------------------------------+--------+

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
                print(loss.temperature)  # the learned temperature
                model.save("output/model")  # st_contrast.load_model("output/model") restores it
        """
        self._fixed_scale = None
        self.learnable_temperature = learnable_temperature
        self.max_scale = max_scale
        super().__init__(
            model,
            scale=1.0 / temperature,
            similarity_fct=similarity_fct,
            gather_across_devices=gather_across_devices,
            directions=directions,
            partition_mode=partition_mode,
        )
        if learnable_temperature:
            # Kept in a list: the module belongs to the model, registering it here would make it a loss child too.
            self._logit_scale = [find_or_add_logit_scale(model, temperature, max_scale, bias=None)]

    @property
    def logit_scale_module(self) -> LogitScale | None:
        """The model's ``LogitScale`` module holding the learned temperature, or None if it is fixed."""
        return self._logit_scale[0] if self.learnable_temperature else None

    @property
    def scale(self) -> Tensor | float:
        """The scale ``1 / temperature``: a differentiable tensor when learned, else the fixed float."""
        if self._fixed_scale is not None:
            return self._fixed_scale
        if self.learnable_temperature:
            return self.logit_scale_module.scale()
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

    @property
    def temperature(self) -> float:
        scale = self.scale
        return 1.0 / float(scale.detach() if isinstance(scale, Tensor) else scale)

    def get_config_dict(self) -> dict[str, Any]:
        config = super().get_config_dict()
        for key in ("scale", "hardness_mode", "hardness_strength"):
            config.pop(key)
        return {
            "temperature": self.temperature,
            "learnable_temperature": self.learnable_temperature,
            "max_scale": self.max_scale,
            **config,
        }

    @property
    def citation(self) -> str:
        return """
@inproceedings{radford2021learning,
    title={Learning Transferable Visual Models From Natural Language Supervision},
    author={Radford, Alec and Kim, Jong Wook and Hallacy, Chris and Ramesh, Aditya and Goh, Gabriel and Agarwal,
        Sandhini and Sastry, Girish and Askell, Amanda and Mishkin, Pamela and Clark, Jack and Krueger, Gretchen and
        Sutskever, Ilya},
    booktitle={ICML},
    year={2021},
}
"""
