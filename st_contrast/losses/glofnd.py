"""GloFND: per-anchor thresholds, learned online, that drop global false negatives from the InfoNCE denominator."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from st_contrast.losses.sample_state import check_sample_indices, sync_rows

__all__ = ["GLOFND_CITATION", "GloFND"]

GLOFND_CITATION = """
@inproceedings{balmaseda2025glofnd,
    title={Discovering Global False Negatives On the Fly for Self-supervised Contrastive Learning},
    author={Balmaseda, Vicente and Wang, Bokun and Lin, Ching-Long and Yang, Tianbao},
    booktitle={ICML},
    year={2025},
}
"""


class GloFND(nn.Module):
    """Global false-negative detection (Balmaseda et al., ICML 2025), an option of the InfoNCE losses.

    Every anchor ``i`` of the dataset owns a threshold ``lambda_i``, learned online as the ``(1 - alpha)``
    quantile of the cosine similarities ``h_ij`` between the anchor and its negatives: each time the anchor is
    in a batch, ``lambda_i`` takes one Adam step on the pinball-loss gradient ``alpha - mean_j 1[h_ij > lambda_i]``
    and is clamped to ``[-1, 1]``. From ``start_step`` on, the negatives with ``h_ij > lambda_i`` (before this
    step's update) are removed from the anchor's softmax denominator. The own positive is never removed.

    The state (thresholds, Adam moments, per-sample and global step counts) is made of buffers, so
    ``loss.state_dict()`` checkpoints it; in distributed training each rank updates the thresholds of its own
    anchors and the updates are exchanged, so the state is identical on every rank.

    Inside ``MatryoshkaLoss`` the thresholds take one step per Matryoshka dimension (each dimension's loss
    evaluation is a training evaluation), on that dimension's similarities.

    Args:
        num_samples: Number of rows of the training dataset (sample indices are ``0 .. num_samples - 1``).
        alpha: Fraction of each anchor's negatives expected above its threshold (small, e.g. 0.01).
        start_step: First training step (loss evaluation with gradients) that masks and learns thresholds.
        lr: Learning rate of the threshold updates.
        betas: Adam coefficients of the threshold updates.
        init_threshold: Initial threshold (1.0: nothing masked until the thresholds have adapted).
        eps: Adam's epsilon.

    Requirements:
        The dataset's label column holds each row's sample index; only the ``("query_to_doc",)`` direction.
    """

    def __init__(
        self,
        num_samples: int,
        alpha: float = 0.01,
        start_step: int = 0,
        lr: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.999),
        init_threshold: float = 1.0,
        eps: float = 1e-8,
    ) -> None:
        super().__init__()
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}.")
        self.num_samples = num_samples
        self.alpha = alpha
        self.start_step = start_step
        self.lr = lr
        self.betas = betas
        self.eps = eps
        self.register_buffer("thresholds", torch.full((num_samples,), float(init_threshold)))
        self.register_buffer("exp_avg", torch.zeros(num_samples))
        self.register_buffer("exp_avg_sq", torch.zeros(num_samples))
        self.register_buffer("sample_steps", torch.zeros(num_samples, dtype=torch.long))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self._batch: dict[str, Any] | None = None

    @property
    def active(self) -> bool:
        return int(self.step) >= self.start_step

    @contextmanager
    def batch(self, labels: Tensor | None, positive_offset: int, update: bool) -> Iterator[None]:
        """Scope of one loss evaluation: ``labels`` hold the local anchors' sample indices, their positives are
        candidate columns ``positive_offset + row``; with ``update`` (training), thresholds learn and the step
        count advances."""
        indices = check_sample_indices(labels, self.num_samples, self.thresholds.device)
        self._batch = {"indices": indices, "offset": positive_offset, "cursor": 0, "update": update, "updated": []}
        try:
            yield
            if update:
                updated = self._batch["updated"]
                indices = torch.cat(updated) if updated else self.sample_steps.new_zeros(0)
                sync_rows([self.thresholds, self.exp_avg, self.exp_avg_sq, self.sample_steps], indices)
                self.step += 1
        finally:
            self._batch = None

    def wrap(self, similarity_fct: Callable[[Tensor, Tensor], Tensor]) -> Callable[[Tensor, Tensor], Tensor]:
        """A similarity function that masks detected false negatives (with ``-inf``) inside a :meth:`batch`."""

        def masked_similarity(anchors: Tensor, candidates: Tensor) -> Tensor:
            scores = similarity_fct(anchors, candidates)
            return scores if self._batch is None else self.mask(scores)

        masked_similarity.__name__ = getattr(similarity_fct, "__name__", "similarity")
        return masked_similarity

    def mask(self, scores: Tensor) -> Tensor:
        """Mask the rows of the next anchors of the batch (scores: anchors x candidates) and learn their thresholds."""
        batch = self._batch
        rows = torch.arange(scores.size(0), device=scores.device)
        local_rows = rows + batch["cursor"]
        batch["cursor"] += scores.size(0)
        if not self.active:
            return scores
        indices = batch["indices"][local_rows]
        negatives = torch.ones_like(scores, dtype=torch.bool)
        negatives[rows, local_rows + batch["offset"]] = False
        similarities = scores.detach()
        above = (similarities > self.thresholds[indices, None]) & negatives
        if batch["update"]:
            fraction_above = above.sum(dim=1) / negatives.sum(dim=1).clamp(min=1)
            self._adam_step(indices, self.alpha - fraction_above.to(self.thresholds.dtype))
            batch["updated"].append(indices)
        return scores.masked_fill(above, float("-inf"))

    @torch.no_grad()
    def _adam_step(self, indices: Tensor, grad: Tensor) -> None:
        beta1, beta2 = self.betas
        steps = self.sample_steps[indices] + 1
        exp_avg = beta1 * self.exp_avg[indices] + (1 - beta1) * grad
        exp_avg_sq = beta2 * self.exp_avg_sq[indices] + (1 - beta2) * grad.square()
        update = (exp_avg / (1 - beta1**steps)) / ((exp_avg_sq / (1 - beta2**steps)).sqrt() + self.eps)
        self.thresholds[indices] = (self.thresholds[indices] - self.lr * update).clamp(-1.0, 1.0)
        self.exp_avg[indices], self.exp_avg_sq[indices], self.sample_steps[indices] = exp_avg, exp_avg_sq, steps

    def extra_repr(self) -> str:
        return f"num_samples={self.num_samples}, alpha={self.alpha}, start_step={self.start_step}, lr={self.lr}"

    def get_config_dict(self) -> dict[str, Any]:
        return {"num_samples": self.num_samples, "alpha": self.alpha, "start_step": self.start_step, "lr": self.lr}
