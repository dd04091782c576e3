"""GloFND: per-sample, per-direction thresholds, learned online, that drop global false negatives from a loss."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch
from torch import Tensor, nn

from st_contrast.losses.sample_state import check_sample_indices, sample_state_in_use, sync_rows

__all__ = ["GLOFND_CITATION", "GloFND"]

GLOFND_CITATION = """
@inproceedings{balmaseda2025glofnd,
    title={Discovering Global False Negatives On the Fly for Self-supervised Contrastive Learning},
    author={Balmaseda, Vicente and Wang, Bokun and Lin, Ching-Long and Yang, Tianbao},
    booktitle={ICML},
    year={2025},
}
"""

# Sentence Transformers' MultipleNegativesRankingLoss scores the directions in this order; the row anchors of
# query_to_doc / query_to_query are its local queries, the column anchors of doc_to_query / doc_to_doc its local
# documents (it transposes those two matrices after scoring).
_MNRL_ORDER = ("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc")
_COLUMN_ANCHORED = ("doc_to_query", "doc_to_doc")


class GloFND(nn.Module):
    """Global false-negative detection (Balmaseda et al., ICML 2025), an option of the InfoNCE, CLIP and global
    contrastive losses.

    Every anchor ``i`` of the dataset owns a threshold ``lambda_i`` *per direction* of the loss (query->doc and
    doc->query; image->text and text->image), learned online as the ``(1 - alpha)`` quantile of the similarities
    ``h_ij`` between the anchor and its negatives: each time the anchor is in a batch, ``lambda_i`` takes one Adam
    step on the pinball-loss gradient ``alpha - mean_j 1[h_ij > lambda_i]`` and is clamped to ``[-1, 1]``. Negatives
    with ``h_ij > lambda_i`` (before this step's update) are the detected false negatives: they leave the anchor's
    softmax denominator (InfoNCE, CLIP) or its moving average ``u_i`` and gradient weights (SogCLR / FastCLIP). The own
    positive is never one.

    The schedule is the method's: thresholds start learning at ``start_update`` and filtering starts at
    ``start_filtering`` (>= ``start_update``), both counted in optimizer steps or in epochs (``schedule_unit``);
    ``init_quantile=True`` resets each anchor's threshold to its mini-batch ``(1 - alpha)`` quantile the first time
    it is updated. Under :class:`~st_contrast.ContrastiveTrainer` the step and epoch are the trainer's; elsewhere
    the detector counts its own training evaluations (``schedule_unit="epoch"`` then needs the trainer).

    The state (thresholds, Adam moments, per-sample step counts, the evaluation count) is made of buffers, so the
    trainer checkpoints it with the loss state; in distributed training each rank updates the thresholds of its own
    anchors and the updates are exchanged, so the state is identical on every rank.

    Args:
        num_samples: Number of rows of the training dataset (sample indices are ``0 .. num_samples - 1``).
        alpha: Fraction of each anchor's negatives expected above its threshold (small, e.g. 0.01).
        start_update: When thresholds start learning (steps or epochs, see ``schedule_unit``).
        start_filtering: When detected false negatives start leaving the loss; default ``start_update``.
        schedule_unit: ``"step"`` (optimizer steps, default) or ``"epoch"``.
        lr: Learning rate of the threshold updates.
        betas: Adam coefficients of the threshold updates (the authors': 0.9, 0.98).
        init_threshold: Initial threshold (1.0: nothing is detected until the thresholds have adapted).
        init_quantile: Reset a threshold to its anchor's mini-batch quantile at its first update.
        eps: Adam's epsilon.
        start_step: Former name of ``start_update`` (and ``start_filtering``).

    Requirements:
        The dataset's label column holds each row's sample index.
    """

    def __init__(
        self,
        num_samples: int,
        alpha: float = 0.01,
        start_update: float = 0,
        start_filtering: float | None = None,
        schedule_unit: Literal["step", "epoch"] = "step",
        lr: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.98),
        init_threshold: float = 1.0,
        init_quantile: bool = False,
        eps: float = 1e-8,
        start_step: int | None = None,
    ) -> None:
        super().__init__()
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}.")
        if start_step is not None:
            start_update = start_step if start_update == 0 else start_update
            start_filtering = start_step if start_filtering is None else start_filtering
        start_filtering = start_update if start_filtering is None else start_filtering
        if start_filtering < start_update:
            raise ValueError(
                f"start_filtering ({start_filtering}) comes before start_update ({start_update}): filtering needs "
                "thresholds that have started learning."
            )
        if schedule_unit not in ("step", "epoch"):
            raise ValueError(f"schedule_unit must be 'step' or 'epoch', got {schedule_unit!r}.")
        self.num_samples = num_samples
        self.alpha = alpha
        self.start_update = start_update
        self.start_filtering = start_filtering
        self.schedule_unit = schedule_unit
        self.lr = lr
        self.betas = tuple(betas)
        self.init_threshold = float(init_threshold)
        self.init_quantile = init_quantile
        self.eps = eps
        self.directions: tuple[str, ...] = ()
        self._bound = False  # to a loss, by bind()
        self._allocate(("query_to_doc",))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self._progress: tuple[int, float] | None = None
        self._batch: dict[str, Any] | None = None

    def bind(self, directions: Sequence[str]) -> None:
        """Give the detector one threshold per sample and per direction of the loss that owns it.

        Raises:
            ValueError: Another loss, with other directions, already owns the detector (binding again would reset the
                thresholds that loss learns).
        """
        directions = tuple(directions)
        if self._bound and directions != self.directions:
            raise ValueError(
                f"This GloFND already belongs to a loss with the directions {self.directions}; a loss with "
                f"{directions} would reset its thresholds. Give each loss its own GloFND."
            )
        self._bound = True
        self._allocate(directions)

    def _allocate(self, directions: tuple[str, ...]) -> None:
        if directions == self.directions:
            return
        shape = (self.num_samples, len(directions))
        self.register_buffer("thresholds", torch.full(shape, self.init_threshold))
        self.register_buffer("exp_avg", torch.zeros(shape))
        self.register_buffer("exp_avg_sq", torch.zeros(shape))
        self.register_buffer("sample_steps", torch.zeros(shape, dtype=torch.long))
        self.directions = directions

    def set_progress(self, step: int, epoch: float) -> None:
        """The trainer's optimizer step and epoch (called by :class:`~st_contrast.ContrastiveTrainer`)."""
        self._progress = (step, epoch)

    def _clock(self) -> float:
        if self.schedule_unit == "epoch":
            if self._progress is None:
                raise RuntimeError(
                    "GloFND(schedule_unit='epoch') needs the epoch: train with st_contrast's ContrastiveTrainer."
                )
            return math.floor(self._progress[1])
        return self._progress[0] if self._progress is not None else int(self.step)

    @property
    def updating(self) -> bool:
        return self._clock() >= self.start_update

    @property
    def filtering(self) -> bool:
        return self._clock() >= self.start_filtering

    @torch.no_grad()
    def detect(self, similarities: Tensor, indices: Tensor, direction: str, negatives: Tensor, update: bool) -> Tensor:
        """The detected false negatives of a block of anchors, learning their thresholds when ``update``.

        Args:
            similarities: ``[anchors, candidates]`` similarities (cosine).
            indices: The anchors' sample indices.
            direction: Which of the bound directions the anchors are scored in.
            negatives: ``[anchors, candidates]`` True where a candidate is a negative of the anchor.
            update: A training evaluation: take a threshold step (once the schedule allows).

        Returns:
            ``[anchors, candidates]`` True where a negative is detected (all False before filtering starts).
        """
        column = self.directions.index(direction)
        similarities = similarities.detach().float()
        thresholds = self.thresholds[indices, column]
        above = (similarities > thresholds[:, None]) & negatives
        if update and self.updating:
            stepping = torch.ones_like(indices, dtype=torch.bool)
            if self.init_quantile:
                # A threshold's first update sets it to its batch quantile, as the authors' code does, with no Adam
                # step on top (it counts as an update, so Adam's own steps start at the next one).
                stepping = self.sample_steps[indices, column] > 0
                if not bool(stepping.all()):
                    quantiles = _row_quantiles(similarities, negatives, 1 - self.alpha)
                    self.thresholds[indices[~stepping], column] = quantiles[~stepping]
                    self.sample_steps[indices[~stepping], column] = 1
            fraction_above = above.sum(dim=1) / negatives.sum(dim=1).clamp(min=1)
            grad = self.alpha - fraction_above.to(self.thresholds.dtype)
            self._adam_step(indices[stepping], column, grad[stepping])
            if self._batch is not None:
                self._batch["updated"].append(indices)
        return above if self.filtering else torch.zeros_like(above)

    @torch.no_grad()
    def _adam_step(self, indices: Tensor, column: int, grad: Tensor) -> None:
        beta1, beta2 = self.betas
        steps = self.sample_steps[indices, column] + 1  # updates of each threshold, its quantile initialisation too
        adam_steps = steps - int(self.init_quantile)
        exp_avg = beta1 * self.exp_avg[indices, column] + (1 - beta1) * grad
        exp_avg_sq = beta2 * self.exp_avg_sq[indices, column] + (1 - beta2) * grad.square()
        update = (exp_avg / (1 - beta1**adam_steps)) / ((exp_avg_sq / (1 - beta2**adam_steps)).sqrt() + self.eps)
        self.thresholds[indices, column] = (self.thresholds[indices, column] - self.lr * update).clamp(-1.0, 1.0)
        self.exp_avg[indices, column] = exp_avg
        self.exp_avg_sq[indices, column] = exp_avg_sq
        self.sample_steps[indices, column] = steps

    @contextmanager
    def evaluation(self, labels: Tensor | None, update: bool) -> Iterator[Tensor]:
        """Scope of one loss evaluation (a training step when ``update``): yields the checked sample indices; at the
        end the updated thresholds are exchanged between ranks and the evaluation count advances."""
        indices = check_sample_indices(labels, self.num_samples, self.thresholds.device)
        outer = self._batch
        if outer is None:
            self._batch = {"updated": []}
        try:
            yield indices
            if update and outer is None:
                updated = self._batch["updated"]
                rows = torch.cat(updated) if updated else self.sample_steps.new_zeros(0)
                sync_rows([self.thresholds, self.exp_avg, self.exp_avg_sq, self.sample_steps], rows)
                self.step += 1
        finally:
            if outer is None:
                self._batch = None

    @contextmanager
    def batch(self, labels: Tensor | None, positive_offset: int, update: bool, world_batch_size: int) -> Iterator[None]:
        """Scope of one InfoNCE loss evaluation whose similarity function :meth:`wrap` masks: ``labels`` hold the
        local anchors' sample indices, their own candidates sit at ``positive_offset + row`` among
        ``world_batch_size`` gathered rows per column group. Inside
        :func:`~st_contrast.losses.sample_state.without_sample_state` nothing is masked."""
        if not sample_state_in_use():
            yield
            return
        with self.evaluation(labels, update) as indices:
            self._batch.update(
                indices=indices, offset=positive_offset, update=update, world=world_batch_size, calls=0, cursor={}
            )
            yield

    def wrap(self, similarity_fct: Callable[[Tensor, Tensor], Tensor]) -> Callable[[Tensor, Tensor], Tensor]:
        """A similarity function for Sentence Transformers' MNRL (and its GradCache variant) that masks the detected
        false negatives with ``-inf`` inside a :meth:`batch`, in every bound direction."""

        def masked_similarity(anchors: Tensor, candidates: Tensor) -> Tensor:
            scores = similarity_fct(anchors, candidates)
            return scores if self._batch is None or "calls" not in self._batch else self._mask_mnrl(scores)

        masked_similarity.__name__ = getattr(similarity_fct, "__name__", "similarity")
        return masked_similarity

    def _mask_mnrl(self, scores: Tensor) -> Tensor:
        batch = self._batch
        order = [direction for direction in _MNRL_ORDER if direction in self.directions]
        direction = order[batch["calls"] % len(order)]
        batch["calls"] += 1
        column_anchored = direction in _COLUMN_ANCHORED
        matrix = scores.T if column_anchored else scores  # rows: this block's anchors
        cursor = batch["cursor"].get(direction, 0)
        batch["cursor"][direction] = cursor + matrix.size(0)
        local = torch.arange(cursor, cursor + matrix.size(0), device=scores.device)
        rows = torch.arange(matrix.size(0), device=scores.device)
        own = local + batch["offset"]
        negatives = torch.ones_like(matrix, dtype=torch.bool)
        groups = matrix.size(1) // batch["world"] if direction == "doc_to_doc" else 1
        for group in range(groups):  # the own positive; for doc_to_doc every document of the own query
            negatives[rows, own + group * batch["world"]] = False
        above = self.detect(matrix, batch["indices"][local], direction, negatives, batch["update"])
        masked = matrix.masked_fill(above, float("-inf"))
        return masked.T if column_anchored else masked

    def extra_repr(self) -> str:
        return (
            f"num_samples={self.num_samples}, directions={self.directions}, alpha={self.alpha}, "
            f"start_update={self.start_update}, start_filtering={self.start_filtering} ({self.schedule_unit}), "
            f"lr={self.lr}"
        )

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "num_samples": self.num_samples,
            "alpha": self.alpha,
            "start_update": self.start_update,
            "start_filtering": self.start_filtering,
            "schedule_unit": self.schedule_unit,
            "lr": self.lr,
            "betas": self.betas,
            "init_quantile": self.init_quantile,
        }


def _row_quantiles(values: Tensor, keep: Tensor, quantile: float) -> Tensor:
    """The ``quantile`` of each row's kept entries (rows without any get 1.0)."""
    out = torch.ones(values.size(0), dtype=values.dtype, device=values.device)
    for row in range(values.size(0)):
        kept = values[row][keep[row]]
        if kept.numel():
            out[row] = torch.quantile(kept, quantile)
    return out
