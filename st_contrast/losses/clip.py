"""The symmetric CLIP loss: InfoNCE in both directions with a learnable temperature."""

from __future__ import annotations

from collections.abc import Callable

from sentence_transformers import SentenceTransformer
from sentence_transformers.util import cos_sim
from torch import Tensor

from st_contrast.losses.glofnd import GloFND
from st_contrast.losses.info_nce import InfoNCELoss

__all__ = ["CLIPLoss"]


class CLIPLoss(InfoNCELoss):
    def __init__(
        self,
        model: SentenceTransformer,
        temperature: float = 0.07,
        learnable_temperature: bool = True,
        max_scale: float = 100.0,
        similarity_fct: Callable[[Tensor, Tensor], Tensor] = cos_sim,
        gather_across_devices: bool = False,
        false_negative_detector: GloFND | None = None,
        temperature_lr: float | None = None,
    ) -> None:
        """
        Symmetric contrastive loss of CLIP: the mean of the anchor -> candidates softmax cross-entropy and the
        positive -> anchors one, with a learnable temperature (initialised at 0.07, scale clamped at 100) kept in
        the model and synced across ranks. It is :class:`InfoNCELoss` with
        ``directions=("query_to_doc", "doc_to_query")`` and ``partition_mode="per_direction"``; hard negatives,
        when given, join the anchor -> candidates softmax only.

        Args:
            model: SentenceTransformer model (texts now; image-text with a model that routes both modalities).
            temperature: Initial temperature (CLIP: 0.07).
            learnable_temperature: Learn the temperature (default) or keep it fixed.
            max_scale: Upper clamp of the scale ``1 / temperature`` (CLIP: 100).
            similarity_fct: Similarity between embeddings, cosine by default.
            gather_across_devices: Contrast against the embeddings of all ranks (with gradients).
            false_negative_detector: A :class:`GloFND` with thresholds for both directions (anchor->positive and
                positive->anchor; image->text and text->image); sample indices as labels.
            temperature_lr: The learned temperature's own learning rate, see :class:`InfoNCELoss`.

        References:
            - Learning Transferable Visual Models From Natural Language Supervision: https://arxiv.org/abs/2103.00020

        Requirements:
            1. (anchor, positive) pairs, or (anchor, positive, negative_1, ..., negative_n) n-tuples.

        Inputs:
            +-------------------------------------------------+--------+
            | Inputs                                          | Labels |
            +=================================================+========+
            | (anchor, positive) pairs                        | none   |
            +-------------------------------------------------+--------+
            | (anchor, positive, negative_1, ..., negative_n) | none   |
            +-------------------------------------------------+--------+

        Relations:
            - :class:`SigLIPLoss` replaces the softmax by independent sigmoids.
            - For GradCache, use :class:`CachedInfoNCELoss` with the same ``directions`` and ``partition_mode``.

        Example:
            ::

                from datasets import Dataset
                from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer

                from st_contrast.losses import CLIPLoss

                model = SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2")
                train_dataset = Dataset.from_dict({
                    "anchor": ["It's nice weather outside today.", "He drove to work."],
                    "positive": ["It's so sunny.", "He took the car to the office."],
                })
                loss = CLIPLoss(model)
                SentenceTransformerTrainer(model=model, train_dataset=train_dataset, loss=loss).train()
        """
        super().__init__(
            model,
            temperature=temperature,
            learnable_temperature=learnable_temperature,
            max_scale=max_scale,
            similarity_fct=similarity_fct,
            gather_across_devices=gather_across_devices,
            directions=("query_to_doc", "doc_to_query"),
            partition_mode="per_direction",
            false_negative_detector=false_negative_detector,
            temperature_lr=temperature_lr,
        )
