"""SogCLR / FastCLIP global contrastive loss: per-sample moving averages of the softmax denominators."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from typing import Any, Literal

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.util import all_gather_with_grad, cos_sim, get_rank, similarity_fct_name
from torch import Tensor, nn

from st_contrast.losses.glofnd import GLOFND_CITATION, GloFND
from st_contrast.losses.matryoshka import in_matryoshka, refuse_per_sample_state
from st_contrast.losses.merged_columns import embed_columns
from st_contrast.losses.sample_state import check_sample_indices, sample_state_in_use, sync_rows
from st_contrast.losses.temperature import LearnedTemperature, adopt_saved_logit_scale

__all__ = ["GlobalContrastiveLoss", "TEMPERATURE_SCHEMES"]

Direction = Literal["query_to_doc", "doc_to_query"]

TEMPERATURE_SCHEMES = {
    "v0": "GCL with one learnable temperature, trained by the gradient of log(u) (FastCLIP-v0)",
    "v1": "GCL with a constant temperature (SogCLR; FastCLIP-v1)",
    "v2": "RGCL with an individual learnable temperature per sample and direction (iSogCLR; FastCLIP-v2)",
    "v3": "RGCL-g with one learnable temperature and rho (FastCLIP-v3)",
}
"""FastCLIP's temperature schemes by their published names (Wei et al., 2024, Table 1)."""
_ALIASES = {"constant": "v1", "learnable": "v3"}


class GlobalContrastiveLoss(nn.Module):
    needs_sample_index = True
    """It keeps per-sample state: each row's dataset index must be the label column (see ``num_samples``)."""

    def __init__(
        self,
        model: SentenceTransformer,
        num_samples: int,
        temperature: float = 0.07,
        temperature_scheme: Literal["v0", "v1", "v2", "v3", "constant", "learnable"] = "v1",
        rho: float = 8.5,
        gamma: float = 0.2,
        gamma_decay_steps: int = 0,
        gamma_decay_epochs: float = 0,
        directions: tuple[Direction, ...] = ("query_to_doc", "doc_to_query"),
        similarity_fct: Callable[[Tensor, Tensor], Tensor] = cos_sim,
        gather_across_devices: bool = False,
        false_negative_detector: GloFND | None = None,
        temperature_lr: float | None = None,
        min_temperature: float = 0.005,
        max_temperature: float = 0.05,
        temperature_beta: float = 0.9,
    ) -> None:
        """
        Global contrastive loss of SogCLR / FastCLIP: the InfoNCE denominator of every anchor ``i`` over the
        *whole dataset* is tracked by a per-sample moving average ``u_i`` instead of being estimated from the
        mini-batch alone, which removes InfoNCE's large-batch requirement. Per direction and anchor::

            g_i = mean_{j in N_i} exp((s_ij - s_ii) / tau_i)       N_i: the batch's other candidates, minus the
                                                                  false negatives GloFND detects (an anchor
                                                                  left without any adds nothing, u_i unchanged)
            u_i <- (1 - gamma_t) * u_i + gamma_t * g_i             (u_i := g_i at the first visit)

        and the model gradient is that of ``tau_i * log(g_i)`` with ``g_i`` replaced by ``u_i`` where it is not
        differentiated: ``tau_i * grad(g_i) / u_i``. ``u`` is kept as ``log u`` and ``g`` computed as a log-sum-exp,
        so temperatures as small as FastCLIP's (0.01-0.03) neither overflow nor underflow. The temperature schemes
        (FastCLIP's names):

        - ``"v1"`` (SogCLR, FastCLIP-v1): ``tau`` constant. Value ``tau * log(u_i)``.
        - ``"v0"`` (FastCLIP-v0): one learnable ``tau`` trained on the GCL objective ``log(g_i)``: model gradient
          ``grad(g_i) / u_i``, temperature gradient ``d_tau g_i / u_i``. Value ``log(u_i)``.
        - ``"v3"`` (RGCL-g, FastCLIP-v3): one learnable ``tau`` with ``rho``: objective
          ``tau * log(g_i) + rho * tau``, temperature gradient ``log(u_i) + tau * d_tau g_i / u_i + rho``.
        - ``"v2"`` (RGCL, iSogCLR, FastCLIP-v2): an individual ``tau_i`` per sample and direction, objective
          ``tau_i * log(g_i) + rho * tau_i``; each ``tau_i`` is updated by the loss itself when its anchor is in a
          batch: ``m_i <- (1 - beta) m_i + beta * (log(u_i) + tau_i * d_tau g_i / u_i + rho)``,
          ``tau_i <- clamp(tau_i - temperature_lr * m_i, min_temperature, max_temperature)``.

        ``gamma_t`` follows FastCLIP's cosine decay from 1 to ``gamma``: ``gamma + (1 - gamma) (1 + cos(pi t / T)) / 2``
        over ``gamma_decay_epochs`` epochs (``t`` the current epoch, as published; needs
        :class:`~st_contrast.ContrastiveTrainer`) or ``gamma_decay_steps`` optimizer steps; constant ``gamma`` when
        both are 0. The returned value is the objective at ``u_i`` (mean over anchors, summed over directions).

        A global learnable temperature is a :class:`~st_contrast.losses.temperature.LearnedTemperature` of the loss
        (no weight decay, its own ``temperature_lr`` under the trainer, ``1/tau`` clamped at 100); individual ones and
        ``u``, the ``seen`` flags, the step count and GloFND's thresholds are buffers: all of it is in the loss state
        that :class:`~st_contrast.ContrastiveTrainer` checkpoints. Each rank updates its own anchors' rows and the
        updates are exchanged after every step, so the state is identical on every rank.

        Args:
            model: SentenceTransformer model.
            num_samples: Number of rows of the training dataset (sample indices ``0 .. num_samples - 1``).
            temperature: (Initial) temperature ``tau``.
            temperature_scheme: ``"v0"``, ``"v1"`` (default), ``"v2"`` or ``"v3"`` (``"constant"`` = v1,
                ``"learnable"`` = v3, the former names).
            rho: The ``rho`` of RGCL (v2, v3); unused by v0 and v1.
            gamma: Final moving-average rate of ``u``.
            gamma_decay_steps: Optimizer steps of the cosine decay of the rate from 1 to ``gamma``.
            gamma_decay_epochs: Epochs of that decay (FastCLIP's unit); needs the trainer's epoch.
            directions: ``"query_to_doc"`` (anchors against candidates), ``"doc_to_query"`` (positives against
                anchors); both by default, as FastCLIP's image/text sides.
            similarity_fct: Similarity between embeddings, cosine by default.
            gather_across_devices: Use the candidates of all ranks as negatives (with gradients).
            false_negative_detector: A :class:`GloFND`: detected false negatives leave ``g_i`` (so ``u_i``) and the
                gradient weights, in every direction with thresholds per direction (Balmaseda et al., 2025).
            temperature_lr: Learning rate of the temperature: the optimizer's for v0/v3 (default: the model's),
                the individual update's for v2 (default 0.0133, FastCLIP-v2's).
            min_temperature: Lower clamp of the individual temperatures (v2).
            max_temperature: Upper clamp of the individual temperatures (v2).
            temperature_beta: Momentum weight of the individual temperatures' gradient (v2, iSogCLR's ``beta``).

        References:
            - Provable Stochastic Optimization for Global Contrastive Learning (SogCLR): https://arxiv.org/abs/2202.12387
            - Not All Semantics are Created Equal (iSogCLR): https://arxiv.org/abs/2305.11965
            - FastCLIP: A Suite of Optimization Techniques to Accelerate CLIP Training: https://arxiv.org/abs/2407.01445
            - Discovering Global False Negatives On the Fly (GloFND): ICML 2025

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
                from sentence_transformers import SentenceTransformer

                from st_contrast import ContrastiveTrainer
                from st_contrast.losses import GlobalContrastiveLoss, GloFND

                model = SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2")
                train_dataset = Dataset.from_dict({
                    "anchor": ["It's nice weather outside today.", "He drove to work."],
                    "positive": ["It's so sunny.", "He took the car to the office."],
                })
                train_dataset = train_dataset.add_column("label", list(range(len(train_dataset))))
                loss = GlobalContrastiveLoss(
                    model, num_samples=len(train_dataset), temperature_scheme="v3", temperature_lr=2e-4,
                    false_negative_detector=GloFND(num_samples=len(train_dataset)),
                )
                ContrastiveTrainer(model=model, train_dataset=train_dataset, loss=loss).train()
        """
        super().__init__()
        scheme = _ALIASES.get(temperature_scheme, temperature_scheme)
        if scheme not in TEMPERATURE_SCHEMES:
            raise ValueError(
                f"temperature_scheme must be one of {sorted(TEMPERATURE_SCHEMES)}, got {temperature_scheme!r}."
            )
        if not directions or not set(directions) <= {"query_to_doc", "doc_to_query"}:
            raise ValueError(f"directions must be a non-empty subset of ('query_to_doc', 'doc_to_query'): {directions}")
        if not 0 < gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1], got {gamma}.")
        if gamma_decay_steps and gamma_decay_epochs:
            raise ValueError("Give gamma_decay_steps or gamma_decay_epochs, not both.")
        if scheme == "v2" and not min_temperature <= temperature <= max_temperature:
            raise ValueError(
                f"temperature {temperature} lies outside [min_temperature, max_temperature] = "
                f"[{min_temperature}, {max_temperature}] of the individual temperatures."
            )
        self.model = model
        self.num_samples = num_samples
        self.temperature_scheme = scheme
        self.initial_temperature = temperature
        self.rho = rho
        self.gamma = gamma
        self.gamma_decay_steps = gamma_decay_steps
        self.gamma_decay_epochs = gamma_decay_epochs
        self.directions = tuple(directions)
        self.similarity_fct = similarity_fct
        self.gather_across_devices = gather_across_devices
        self.min_temperature, self.max_temperature = min_temperature, max_temperature
        self.temperature_beta = temperature_beta
        self._progress: tuple[int, float] | None = None
        shape = (num_samples, len(self.directions))
        self.register_buffer("log_u", torch.zeros(shape))
        self.register_buffer("seen", torch.zeros(shape, dtype=torch.bool))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.learned_temperature = None
        if scheme in ("v0", "v3"):
            self.learned_temperature = LearnedTemperature(temperature, 100.0, lr=temperature_lr).to(model.device)
            adopt_saved_logit_scale(model, self.learned_temperature)
        if scheme == "v2":
            self.individual_lr = 0.0133 if temperature_lr is None else temperature_lr
            self.register_buffer("individual_tau", torch.full(shape, float(temperature)))
            self.register_buffer("individual_tau_momentum", torch.zeros(shape))
        self.false_negative_detector = false_negative_detector
        if false_negative_detector is not None:
            false_negative_detector.bind(self.directions)

    def set_progress(self, step: int, epoch: float) -> None:
        """The trainer's optimizer step and epoch (called by :class:`~st_contrast.ContrastiveTrainer`)."""
        self._progress = (step, epoch)

    def tau(self) -> Tensor:
        """The current global temperature (differentiable and rank-synced when learnable)."""
        if self.learned_temperature is not None:
            return 1.0 / self.learned_temperature.scale()
        return torch.tensor(self.initial_temperature, device=self.log_u.device)

    @property
    def temperature(self) -> float:
        """The global temperature, or the mean individual one (v2)."""
        if self.temperature_scheme == "v2":
            return float(self.individual_tau.mean())
        return float(self.tau().detach())

    def current_gamma(self) -> float:
        if self.gamma_decay_epochs:
            if self._progress is None:
                raise RuntimeError("gamma_decay_epochs needs the epoch: train with st_contrast's ContrastiveTrainer.")
            position, length = math.floor(self._progress[1]), self.gamma_decay_epochs
        else:
            position = self._progress[0] if self._progress is not None else int(self.step)
            length = self.gamma_decay_steps
        if position >= length:
            return self.gamma
        return self.gamma + (1.0 - self.gamma) * 0.5 * (1.0 + math.cos(math.pi * position / length))

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None) -> Tensor:
        if in_matryoshka(self, self.model):
            refuse_per_sample_state(type(self).__name__)
        return self.compute_loss_from_embeddings(embed_columns(self.model, sentence_features), labels)

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor | None) -> Tensor:
        if len(embeddings) < 2:
            raise ValueError(f"GlobalContrastiveLoss needs (anchor, positive[, negatives...]), got {len(embeddings)}.")
        stateful = sample_state_in_use()  # else rows that are not training samples: the batch-only value
        update = stateful and torch.is_grad_enabled()
        indices = check_sample_indices(labels, self.num_samples, self.log_u.device) if stateful else None
        queries, docs = embeddings[0], embeddings[1:]
        all_queries, all_docs, offset = queries, docs, 0
        if self.gather_across_devices:
            all_queries = all_gather_with_grad(queries)
            all_docs = [all_gather_with_grad(doc) for doc in docs]
            offset = get_rank() * len(queries)
        candidates = {"query_to_doc": (queries, torch.cat(all_docs)), "doc_to_query": (docs[0], all_queries)}
        loss = 0.0
        detector = self.false_negative_detector if stateful else None
        with detector.evaluation(indices, update) if detector is not None else nullcontext():
            for column, direction in enumerate(self.directions):
                anchors, others = candidates[direction]
                loss = loss + self._direction_loss(anchors, others, indices, column, direction, offset, update)
        if update:
            state = [self.log_u, self.seen]
            if self.temperature_scheme == "v2":
                state += [self.individual_tau, self.individual_tau_momentum]
            sync_rows(state, indices)
            self.step += 1
        return loss

    def _direction_loss(
        self,
        anchors: Tensor,
        others: Tensor,
        indices: Tensor | None,
        column: int,
        direction: str,
        offset: int,
        update: bool,
    ) -> Tensor:
        """One direction's objective; ``indices`` None: from the batch alone (no per-sample state read)."""
        scores = self.similarity_fct(anchors, others)
        rows = torch.arange(len(anchors), device=scores.device)
        positives = scores[rows, rows + offset]
        negatives = torch.ones_like(scores, dtype=torch.bool)
        negatives[rows, rows + offset] = False
        if self.false_negative_detector is not None and indices is not None:
            negatives &= ~self.false_negative_detector.detect(scores, indices, direction, negatives, update)
        if self.temperature_scheme == "v2" and indices is None:
            individual = self.individual_tau[:, column].mean().expand(len(anchors))
            tau = individual[:, None]
        elif self.temperature_scheme == "v2":  # a leaf per anchor: d g_i / d tau_i drives its own update
            individual = self.individual_tau[indices, column].clone().requires_grad_(update)
            tau = individual[:, None]
        else:
            tau = self.tau()
        exponents = ((scores - positives[:, None]) / tau).masked_fill(~negatives, float("-inf"))
        count = negatives.sum(dim=1)
        # An anchor whose negatives were all detected as false ones carries no signal: it neither moves u nor the loss.
        active = count > 0
        log_g = torch.logsumexp(exponents, dim=1) - torch.log(count.clamp(min=1))
        log_g = torch.where(active, log_g, torch.zeros_like(log_g))
        log_u = (
            log_g.detach() if indices is None else self._moving_average(log_g.detach(), indices, column, update, active)
        )
        # Its gradient is grad(g) / u = (g / u) grad(log g), also with respect to a learnable tau.
        surrogate = (log_g.detach() - log_u).exp() * (log_g - log_g.detach())
        if self.temperature_scheme == "v0":
            per_anchor = surrogate + log_u
        elif self.temperature_scheme == "v2":
            if update:
                self._update_individual_temperatures(log_g, log_u, individual, indices, column)
            per_anchor = individual.detach() * (surrogate + log_u) + self.rho * individual.detach()
        else:
            per_anchor = tau * surrogate + tau * log_u
            if self.temperature_scheme == "v3":
                per_anchor = per_anchor + self.rho * tau
        return (per_anchor * active).sum() / len(anchors)

    def _update_individual_temperatures(
        self, log_g: Tensor, log_u: Tensor, tau: Tensor, indices: Tensor, column: int
    ) -> None:
        """iSogCLR / FastCLIP-v2: one momentum step per anchor on d/d tau_i of tau_i log(g_i) + rho tau_i."""
        (d_tau_log_g,) = torch.autograd.grad(log_g.sum(), tau, retain_graph=True)  # g_i depends on its tau_i only
        with torch.no_grad():
            grad = log_u + tau * (log_g - log_u).exp() * d_tau_log_g + self.rho
            beta = self.temperature_beta
            momentum = (1 - beta) * self.individual_tau_momentum[indices, column] + beta * grad
            self.individual_tau_momentum[indices, column] = momentum
            stepped = tau - self.individual_lr * momentum
            self.individual_tau[indices, column] = stepped.clamp(self.min_temperature, self.max_temperature)

    @torch.no_grad()
    def _moving_average(
        self, log_g: Tensor, indices: Tensor | None, column: int, update: bool, active: Tensor
    ) -> Tensor:
        """``log u_i`` after this batch: ``u <- (1 - gamma) u + gamma g`` in log space (``u := g`` at a first visit;
        ``indices`` None: the batch alone, ``u := g``)."""
        if indices is None:
            return log_g
        previous = torch.where(self.seen[indices, column], self.log_u[indices, column], log_g)
        if not update:
            return previous
        gamma = self.current_gamma()
        mixed = (
            previous
            if gamma == 0
            else log_g
            if gamma == 1
            else torch.logaddexp(previous + math.log1p(-gamma), log_g + math.log(gamma))
        )
        log_u = torch.where(active, mixed, self.log_u[indices, column])
        self.log_u[indices, column] = log_u
        self.seen[indices, column] |= active
        return log_u

    def get_config_dict(self) -> dict[str, Any]:
        detector = self.false_negative_detector
        return {
            "num_samples": self.num_samples,
            "temperature": self.temperature,
            "temperature_scheme": self.temperature_scheme,
            "rho": self.rho,
            "gamma": self.gamma,
            "gamma_decay_steps": self.gamma_decay_steps,
            "gamma_decay_epochs": self.gamma_decay_epochs,
            "directions": self.directions,
            "similarity_fct": similarity_fct_name(self.similarity_fct),
            "gather_across_devices": self.gather_across_devices,
            "false_negative_detector": None if detector is None else detector.get_config_dict(),
        }

    @property
    def citation(self) -> str:
        return (
            (GLOFND_CITATION if self.false_negative_detector is not None else "")
            + """
@inproceedings{yuan2022provable,
    title={Provable Stochastic Optimization for Global Contrastive Learning: Small Batch Does Not Harm Performance},
    author={Yuan, Zhuoning and Wu, Yuexin and Qiu, Zi-Hao and Du, Xianzhi and Zhang, Lijun and Zhou, Denny and
        Yang, Tianbao},
    booktitle={ICML},
    year={2022},
}
@inproceedings{qiu2023not,
    title={Not All Semantics are Created Equal: Contrastive Self-supervised Learning with Automatic Temperature
        Individualization},
    author={Qiu, Zi-Hao and Hu, Quanqi and Yuan, Zhuoning and Zhou, Denny and Zhang, Lijun and Yang, Tianbao},
    booktitle={ICML},
    year={2023},
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
        )
