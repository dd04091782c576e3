"""SogCLR / FastCLIP global contrastive loss: per-sample moving averages of the softmax denominators."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.util import all_gather_with_grad, cos_sim, get_rank, similarity_fct_name
from torch import Tensor, nn

from st_contrast.compat import embed_columns
from st_contrast.losses.sample_state import check_sample_indices, sync_rows
from st_contrast.losses.temperature import LearnedTemperature, adopt_saved_logit_scale

__all__ = ["GlobalContrastiveLoss"]

Direction = Literal["query_to_doc", "doc_to_query"]
MAX_EXPONENT = 80.0  # exp(80) ~ 5.5e34 stays finite in fp32


class GlobalContrastiveLoss(nn.Module):
    needs_sample_index = True
    """It keeps per-sample state: each row's dataset index must be the label column (see ``num_samples``)."""

    def __init__(
        self,
        model: SentenceTransformer,
        num_samples: int,
        temperature: float = 0.07,
        temperature_scheme: Literal["constant", "learnable"] = "constant",
        rho: float = 8.5,
        gamma: float = 0.2,
        gamma_decay_steps: int = 0,
        directions: tuple[Direction, ...] = ("query_to_doc", "doc_to_query"),
        similarity_fct: Callable[[Tensor, Tensor], Tensor] = cos_sim,
        gather_across_devices: bool = False,
        eps: float = 1e-8,
    ) -> None:
        """
        Global contrastive loss of SogCLR / FastCLIP: the InfoNCE denominator of every anchor ``i`` over the
        *whole dataset* is tracked by a per-sample moving average ``u_i`` instead of being estimated from the
        mini-batch alone, which removes InfoNCE's large-batch requirement. Per direction and anchor::

            g_i = mean_{j != i} exp((s_ij - s_ii) / tau)          (negatives: the batch's other candidates)
            u_i <- (1 - gamma_t) * u_i + gamma_t * g_i             (u_i := g_i at the first visit)
            gradient = tau * grad(g_i) / (eps + u_i)               (w.r.t. the model)
                       + log(eps + u_i) + tau * d_tau g_i / (eps + u_i) + rho  (w.r.t. tau, "learnable" only)

        i.e. the gradient of ``tau * log(eps + g_i) + rho * tau`` (FastCLIP-v3's objective) with ``g_i`` replaced
        by its moving average where it is not differentiated. The returned value is that objective at ``u_i``
        (mean over anchors, summed over directions). ``gamma_t`` follows a cosine decay from 1 to ``gamma`` over
        ``gamma_decay_steps`` steps (constant ``gamma`` when 0).

        Temperature schemes: ``"constant"`` (SogCLR, FastCLIP-v0) and ``"learnable"`` (one global temperature,
        FastCLIP-v3, with ``rho``), the latter a :class:`~st_contrast.losses.temperature.LearnedTemperature` of the loss
        (checkpointed with the loss state, averaged over ranks; ``1/tau`` clamped at 100).

        The state (``u`` per sample and direction, ``seen`` flags, the step count) is made of buffers: it is in
        ``loss.state_dict()`` for checkpoints. Each rank updates its own anchors' ``u`` and the updates are
        exchanged after every step, so the state is identical on every rank.

        Args:
            model: SentenceTransformer model.
            num_samples: Number of rows of the training dataset (sample indices ``0 .. num_samples - 1``).
            temperature: (Initial) temperature ``tau``.
            temperature_scheme: ``"constant"`` or ``"learnable"``.
            rho: FastCLIP-v3's ``rho`` (its gradient w.r.t. ``tau`` per direction); ignored when constant.
            gamma: Final moving-average rate of ``u``.
            gamma_decay_steps: Steps of cosine decay of the rate from 1 to ``gamma``.
            directions: ``"query_to_doc"`` (anchors against candidates), ``"doc_to_query"`` (positives against
                anchors); both by default, as FastCLIP's image/text sides.
            similarity_fct: Similarity between embeddings, cosine by default.
            gather_across_devices: Use the candidates of all ranks as negatives (with gradients).
            eps: The ``eps`` of ``log(eps + u)``.

        References:
            - Provable Stochastic Optimization for Global Contrastive Learning (SogCLR): https://arxiv.org/abs/2202.12387
            - FastCLIP: A Suite of Optimization Techniques to Accelerate CLIP Training: https://arxiv.org/abs/2407.01445

        Requirements:
            1. (anchor, positive[, negatives...]) columns and each row's dataset index as the label column
               (``dataset.add_column("label", list(range(len(dataset))))``).

        Inputs:
            +-------------------------------------------------+--------------+
            | Inputs                                          | Labels       |
            +=================================================+==============+
            | (anchor, positive) pairs                        | sample index |
            +-------------------------------------------------+--------------+
            | (anchor, positive, negative_1, ..., negative_n) | sample index |
            +-------------------------------------------------+--------------+

        Relations:
            - :class:`InfoNCELoss` / :class:`CLIPLoss` estimate the denominator from the mini-batch only.

        Example:
            ::

                from datasets import Dataset
                from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer

                from st_contrast.losses import GlobalContrastiveLoss

                model = SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2")
                train_dataset = Dataset.from_dict({
                    "anchor": ["It's nice weather outside today.", "He drove to work."],
                    "positive": ["It's so sunny.", "He took the car to the office."],
                })
                train_dataset = train_dataset.add_column("label", list(range(len(train_dataset))))
                loss = GlobalContrastiveLoss(model, num_samples=len(train_dataset), temperature_scheme="learnable")
                SentenceTransformerTrainer(model=model, train_dataset=train_dataset, loss=loss).train()
        """
        super().__init__()
        if temperature_scheme not in ("constant", "learnable"):
            raise ValueError(f"temperature_scheme must be 'constant' or 'learnable', got {temperature_scheme!r}.")
        if not directions or not set(directions) <= {"query_to_doc", "doc_to_query"}:
            raise ValueError(f"directions must be a non-empty subset of ('query_to_doc', 'doc_to_query'): {directions}")
        if not 0 < gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1], got {gamma}.")
        self.model = model
        self.num_samples = num_samples
        self.temperature_scheme = temperature_scheme
        self.initial_temperature = temperature
        self.rho = rho
        self.gamma = gamma
        self.gamma_decay_steps = gamma_decay_steps
        self.directions = tuple(directions)
        self.similarity_fct = similarity_fct
        self.gather_across_devices = gather_across_devices
        self.eps = eps
        self.register_buffer("u", torch.zeros(num_samples, len(self.directions)))
        self.register_buffer("seen", torch.zeros(num_samples, len(self.directions), dtype=torch.bool))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.learned_temperature = (
            LearnedTemperature(temperature, 100.0).to(model.device) if temperature_scheme == "learnable" else None
        )
        if self.learned_temperature is not None:
            adopt_saved_logit_scale(model, self.learned_temperature)

    def tau(self) -> Tensor:
        """The current temperature (differentiable and rank-synced when learnable)."""
        if self.learned_temperature is None:
            return torch.tensor(self.initial_temperature, device=self.u.device)
        return 1.0 / self.learned_temperature.scale()

    @property
    def temperature(self) -> float:
        return float(self.tau().detach())

    def current_gamma(self) -> float:
        step = int(self.step)
        if step >= self.gamma_decay_steps:
            return self.gamma
        return self.gamma + (1.0 - self.gamma) * 0.5 * (1.0 + math.cos(math.pi * step / self.gamma_decay_steps))

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None) -> Tensor:
        return self.compute_loss_from_embeddings(embed_columns(self.model, sentence_features), labels)

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor | None) -> Tensor:
        if len(embeddings) < 2:
            raise ValueError(f"GlobalContrastiveLoss needs (anchor, positive[, negatives...]), got {len(embeddings)}.")
        indices = check_sample_indices(labels, self.num_samples, self.u.device)
        queries, docs = embeddings[0], embeddings[1:]
        all_queries, all_docs, offset = queries, docs, 0
        if self.gather_across_devices:
            all_queries = all_gather_with_grad(queries)
            all_docs = [all_gather_with_grad(doc) for doc in docs]
            offset = get_rank() * len(queries)
        candidates = {"query_to_doc": (queries, torch.cat(all_docs)), "doc_to_query": (docs[0], all_queries)}
        update = torch.is_grad_enabled()
        tau = self.tau()
        loss = 0.0
        for column, direction in enumerate(self.directions):
            anchors, others = candidates[direction]
            loss = loss + self._direction_loss(anchors, others, indices, column, offset, tau, update)
        if update:
            sync_rows([self.u, self.seen], indices)
            self.step += 1
        return loss

    def _direction_loss(
        self, anchors: Tensor, others: Tensor, indices: Tensor, column: int, offset: int, tau: Tensor, update: bool
    ) -> Tensor:
        scores = self.similarity_fct(anchors, others)
        rows = torch.arange(len(anchors), device=scores.device)
        positives = scores[rows, rows + offset]
        negatives = torch.ones_like(scores, dtype=torch.bool)
        negatives[rows, rows + offset] = False
        exponents = ((scores - positives[:, None]) / tau).clamp(max=MAX_EXPONENT)
        g = (exponents.exp() * negatives).sum(dim=1) / negatives.sum(dim=1)
        u = self._moving_average(g.detach(), indices, column, update)
        weights = 1.0 / (self.eps + u)
        log_u = torch.log(self.eps + u)
        # Value: tau * log(eps + u) + rho * tau; gradient: the SogCLR/FastCLIP estimator (see the class docstring).
        per_anchor = tau * (g - g.detach()) * weights + tau * log_u
        if self.temperature_scheme == "learnable":
            per_anchor = per_anchor + self.rho * tau
        return per_anchor.mean()

    @torch.no_grad()
    def _moving_average(self, g: Tensor, indices: Tensor, column: int, update: bool) -> Tensor:
        previous = torch.where(self.seen[indices, column], self.u[indices, column], g)
        if not update:
            return previous
        gamma = self.current_gamma()
        u = (1 - gamma) * previous + gamma * g
        self.u[indices, column] = u
        self.seen[indices, column] = True
        return u

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "num_samples": self.num_samples,
            "temperature": self.temperature,
            "temperature_scheme": self.temperature_scheme,
            "rho": self.rho,
            "gamma": self.gamma,
            "gamma_decay_steps": self.gamma_decay_steps,
            "directions": self.directions,
            "similarity_fct": similarity_fct_name(self.similarity_fct),
            "gather_across_devices": self.gather_across_devices,
        }

    @property
    def citation(self) -> str:
        return """
@inproceedings{yuan2022provable,
    title={Provable Stochastic Optimization for Global Contrastive Learning: Small Batch Does Not Harm Performance},
    author={Yuan, Zhuoning and Wu, Yuexin and Qiu, Zi-Hao and Du, Xianzhi and Zhang, Lijun and Zhou, Denny and
        Yang, Tianbao},
    booktitle={ICML},
    year={2022},
}
@inproceedings{wei2024fastclip,
    title={FastCLIP: A Suite of Optimization Techniques to Accelerate CLIP Training with Limited Resources},
    author={Wei, Xiyuan and Ye, Fanjiang and Yonay, Ori and Chen, Xingyu and Sun, Baixi and Tao, Dingwen and
        Yang, Tianbao},
    year={2024},
    eprint={2407.01445},
    archivePrefix={arXiv},
}
"""
