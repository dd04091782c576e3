"""InfoNCE with a learnable, rank-synced temperature owned by the loss, computed with GradCache for large batches."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.losses.gradcache import RandContext
from sentence_transformers.sentence_transformer.losses import CachedMultipleNegativesRankingLoss
from sentence_transformers.util import cos_sim
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

from st_contrast.compat import sequences_in
from st_contrast.losses.batch_norm import warn_batch_norm_in_mini_batches
from st_contrast.losses.glofnd import GloFND
from st_contrast.losses.info_nce import Direction, InfoNCELoss
from st_contrast.losses.matryoshka import in_matryoshka, matryoshka_weight, refuse_per_sample_state
from st_contrast.losses.temperature import LearnedTemperature

__all__ = ["CachedInfoNCELoss"]


class CachedInfoNCELoss(CachedMultipleNegativesRankingLoss):
    def __init__(
        self,
        model: SentenceTransformer,
        temperature: float = 0.05,
        learnable_temperature: bool = True,
        max_scale: float = 100.0,
        similarity_fct: Callable[[Tensor, Tensor], Tensor] = cos_sim,
        mini_batch_size: int = 32,
        mini_batch_num_tokens: int | None = None,
        gather_across_devices: bool = False,
        directions: tuple[Direction, ...] = ("query_to_doc",),
        partition_mode: Literal["joint", "per_direction"] = "joint",
        show_progress_bar: bool = False,
        false_negative_detector: GloFND | None = None,
        temperature_lr: float | None = None,
    ) -> None:
        """
        :class:`InfoNCELoss` (learnable, rank-synced temperature that belongs to the loss) computed with GradCache
        (:class:`~sentence_transformers.sentence_transformer.losses.CachedMultipleNegativesRankingLoss`): the
        batch is embedded in mini-batches without gradients, the loss is back-propagated to the embeddings in
        chunks of ``mini_batch_size`` rows, then every mini-batch is re-embedded with its RNG state replayed
        (same dropout masks) and the cached gradients are pushed through it. Memory stays that of one
        mini-batch; loss and gradients equal :class:`InfoNCELoss` on the whole batch, temperature included.

        The temperature's gradient is accumulated over the loss chunks on a detached copy and
        back-propagated (and averaged over ranks) once per loss evaluation.

        Two shortcuts keep it close to the uncached speed without changing a gradient or the memory bound: a batch
        no larger than one mini-batch (all columns together) is embedded once, with gradients, as
        :class:`InfoNCELoss` does (not inside ``MatryoshkaLoss``, whose decorator drives the cached path); otherwise
        the first mini-batch is embedded with gradients in the first pass and its graph kept until the backward pass
        consumes it first, so it is not embedded twice (in one process; under DDP every mini-batch is replayed, as in
        Sentence Transformers).

        Args:
            model: SentenceTransformer model.
            temperature: Initial temperature (the fixed one when ``learnable_temperature=False``).
            learnable_temperature: Learn the temperature (default) or keep it fixed.
            max_scale: Upper clamp of the learned scale ``1 / temperature`` (CLIP: 100).
            similarity_fct: Similarity between embeddings, cosine by default.
            mini_batch_size: Sequences per embedding mini-batch and rows per loss chunk; bounds the memory.
            mini_batch_num_tokens: If set, embedding mini-batches are packed by token count instead.
            gather_across_devices: Gather the embeddings of all ranks (with gradients); see :class:`InfoNCELoss`.
            directions: Interaction terms, see :class:`InfoNCELoss`.
            partition_mode: ``"joint"`` or ``"per_direction"``, see :class:`InfoNCELoss`.
            show_progress_bar: Show a progress bar over the mini-batches.
            false_negative_detector: A :class:`GloFND`, see :class:`InfoNCELoss` (sample indices as labels).
            temperature_lr: The learned temperature's own learning rate, see :class:`InfoNCELoss`.

        References:
            - Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup: https://arxiv.org/abs/2101.06983
            - Learning Transferable Visual Models From Natural Language Supervision: https://arxiv.org/abs/2103.00020

        Requirements:
            1. (anchor, positive) pairs, triplets or n-tuples, as :class:`InfoNCELoss`.
            2. A large ``per_device_train_batch_size`` and a small ``mini_batch_size``.

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
            - Same loss and gradients as :class:`InfoNCELoss`, for a fraction of the memory and ~1.2-1.4x the time
              (one extra forward pass: 4/3 in theory; benchmarks/RESULTS.md).
            - Works inside ``MatryoshkaLoss`` (which decorates ``calculate_loss``).

        Example:
            ::

                from datasets import Dataset
                from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer

                from st_contrast.losses import CachedInfoNCELoss

                model = SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2")
                train_dataset = Dataset.from_dict({
                    "anchor": ["It's nice weather outside today.", "He drove to work."],
                    "positive": ["It's so sunny.", "He took the car to the office."],
                })
                loss = CachedInfoNCELoss(model, temperature=0.05, mini_batch_size=32)
                SentenceTransformerTrainer(model=model, train_dataset=train_dataset, loss=loss).train()
        """
        super().__init__(
            model,
            similarity_fct=similarity_fct,
            mini_batch_size=mini_batch_size,
            mini_batch_num_tokens=mini_batch_num_tokens,
            gather_across_devices=gather_across_devices,
            directions=directions,
            partition_mode=partition_mode,
            show_progress_bar=show_progress_bar,
        )
        self._kept: tuple[tuple[int, int, int], Tensor] | str | None = None  # see embed_minibatch
        # Swap the wrapped stock loss for the learnable-temperature one; CachedMNRL reads its hyperparameters there.
        self.loss = InfoNCELoss(
            model,
            temperature=temperature,
            learnable_temperature=learnable_temperature,
            max_scale=max_scale,
            similarity_fct=similarity_fct,
            gather_across_devices=gather_across_devices,
            directions=directions,
            partition_mode=partition_mode,
            false_negative_detector=false_negative_detector,
            temperature_lr=temperature_lr,
        )

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None) -> Tensor:
        sentence_features = list(sentence_features)
        self._kept = None
        grad = torch.is_grad_enabled() and len(sentence_features) >= 2
        # A wrapper that decorates calculate_loss (ST's MatryoshkaLoss) back-propagates through the cached path itself.
        decorated = "calculate_loss" in vars(self)
        if grad and not decorated and self._fits_one_mini_batch(sentence_features):
            reps = [[self.model(features)["sentence_embedding"]] for features in sentence_features]
            return self.calculate_loss(reps, labels)
        if grad:
            warn_batch_norm_in_mini_batches(self)
        ddp = isinstance(getattr(self.model, "_orig_mod", self.model), DistributedDataParallel)  # as ST's hook looks
        self._kept = "pending" if grad and not ddp else None
        return super().forward(sentence_features, labels)

    def _fits_one_mini_batch(self, sentence_features: list[dict[str, Tensor]]) -> bool:
        """Whether every column together is no larger than one mini-batch (then caching saves no memory)."""
        if self.mini_batch_num_tokens is not None:
            return False
        return sum(sequences_in(features) for features in sentence_features) <= self.mini_batch_size

    def embed_minibatch(
        self,
        sentence_feature: dict[str, Tensor],
        begin: int,
        end: int,
        with_grad: bool,
        copy_random_state: bool,
        random_state: RandContext | None = None,
    ) -> tuple[Tensor, RandContext | None]:
        """ST's mini-batch embedding, except for the first mini-batch of a training step: embedded with gradients in
        the first pass, its graph kept and handed to the backward pass instead of a replay (see the class docs).

        Its RNG state is recorded all the same: a second evaluation before this one's backward (two losses summed
        into one backward) takes the slot over, and this mini-batch is then replayed with its own dropout masks."""
        key = (id(sentence_feature), begin, end)
        if self._kept == "pending" and not with_grad:
            reps, random_state = super().embed_minibatch(
                sentence_feature, begin, end, with_grad=True, copy_random_state=copy_random_state
            )
            self._kept = (key, reps)
            return reps, random_state
        if with_grad and isinstance(self._kept, tuple) and self._kept[0] == key:
            reps, self._kept = self._kept[1], None
            return reps, None
        return super().embed_minibatch(sentence_feature, begin, end, with_grad, copy_random_state, random_state)

    @property
    def learned_temperature(self) -> LearnedTemperature | None:
        """The loss's learned temperature (:class:`InfoNCELoss`'s), or None if it is fixed."""
        return self.loss.learned_temperature

    @property
    def temperature(self) -> float:
        return self.loss.temperature

    def calculate_loss(self, reps: list[list[Tensor]], labels: Tensor | None = None, *, with_backward: bool = False):
        if self.loss.false_negative_detector is not None and in_matryoshka(self, self.model):
            refuse_per_sample_state(f"{type(self).__name__} with GloFND")
        with self.loss.false_negative_scope(sum(len(rep) for rep in reps[0]), labels):
            return self._calculate_loss_with_scale_leaf(reps, labels, with_backward)

    def _calculate_loss_with_scale_leaf(self, reps: list[list[Tensor]], labels: Tensor | None, with_backward: bool):
        if not (with_backward and self.loss.learnable_temperature):
            return super().calculate_loss(reps, labels, with_backward=with_backward)
        # Each loss chunk back-propagates separately: collect the scale's gradient on a leaf, then
        # back-propagate it through the (rank-synced) learned scale once, with the Matryoshka weight of this
        # evaluation (MatryoshkaLoss's decorator weights only the embeddings' gradients).
        scale = self.loss.learned_temperature.scale()
        scale_leaf = scale.detach().requires_grad_()
        with self.loss.fixed_scale(scale_leaf):
            loss = super().calculate_loss(reps, labels, with_backward=True)
        scale.backward(matryoshka_weight(self, reps) * scale_leaf.grad)
        return loss

    def get_config_dict(self) -> dict[str, Any]:
        return {
            **self.loss.get_config_dict(),
            "mini_batch_size": self.mini_batch_size,
            "mini_batch_num_tokens": self.mini_batch_num_tokens,
        }
