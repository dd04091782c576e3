"""Geometry of the embedding space on a fixed probe set, to see collapse early.

All metrics use L2-normalised embeddings (the unit sphere contrastive losses work on):

- ``anisotropy``: mean cosine over distinct pairs of probe texts (0 for spread-out embeddings, 1 when
  everything maps to one direction; Ethayarajh, 2019).
- ``uniformity``: ``log mean_{i<j} exp(-t ||x_i - x_j||^2)``, ``t = 2`` (Wang & Isola, 2020); lower is
  more uniform, 0 is total collapse.
- ``alignment``: ``mean_i ||a_i - p_i||^2`` over (anchor, positive) pairs (Wang & Isola, 2020); lower is better.
- ``effective_rank``: ``exp(H(p))`` with ``p_k = sigma_k / sum(sigma)`` the singular values of the centred
  embedding matrix (Roy & Vetterli, 2007): how many directions the probe set really uses.
- ``top_singular_share``: ``sigma_1 / sum(sigma)`` of the same matrix (1 when one direction carries all).
- ``positive_negative_gap``: mean cosine of (anchor, positive) pairs minus mean cosine of (anchor,
  negative) pairs; negatives are the probe's negative column, or else the other anchors' positives.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from sentence_transformers.base.evaluation.evaluator import BaseEvaluator

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["EmbeddingGeometryEvaluator", "embedding_geometry", "pair_geometry", "spread_geometry"]


def _off_diagonal(matrix: torch.Tensor) -> torch.Tensor:
    n = matrix.shape[0]
    return matrix[~torch.eye(n, dtype=torch.bool, device=matrix.device)]


def spread_geometry(embeddings: torch.Tensor, t: float = 2.0) -> dict[str, float]:
    """``anisotropy``, ``uniformity``, ``effective_rank`` and ``top_singular_share`` of ``[n, dim]`` embeddings."""
    if embeddings.dim() != 2 or embeddings.shape[0] < 2:
        raise ValueError(f"Need a [n, dim] matrix with n >= 2 embeddings, got shape {tuple(embeddings.shape)}.")
    x = F.normalize(embeddings.detach().double(), dim=-1)
    cosines = _off_diagonal(x @ x.T)
    squared_distances = (2.0 - 2.0 * cosines).clamp_min(0.0)
    uniformity = torch.logsumexp(-t * squared_distances, dim=0) - math.log(squared_distances.numel())
    singular_values = torch.linalg.svdvals(x - x.mean(dim=0, keepdim=True))
    total = singular_values.sum()
    if total <= 1e-12 * x.shape[0]:  # every embedding identical: no direction is used
        effective_rank, top_share = 0.0, 1.0
    else:
        p = singular_values / total
        p = p[p > 0]
        effective_rank = float(torch.exp(-(p * p.log()).sum()))
        top_share = float(singular_values[0] / total)
    return {
        "anisotropy": float(cosines.mean()),
        "uniformity": float(uniformity),
        "effective_rank": effective_rank,
        "top_singular_share": top_share,
    }


def pair_geometry(
    anchors: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor | None = None
) -> dict[str, float]:
    """``alignment`` and ``positive_negative_gap`` of row-aligned anchor / positive (/ negative) embeddings."""
    if anchors.shape != positives.shape or anchors.dim() != 2:
        raise ValueError(
            f"anchors and positives must be [n, dim] of the same shape, got {tuple(anchors.shape)} and "
            f"{tuple(positives.shape)}."
        )
    a = F.normalize(anchors.detach().double(), dim=-1)
    p = F.normalize(positives.detach().double(), dim=-1)
    positive_cosines = (a * p).sum(-1)
    if negatives is not None:
        if negatives.shape != anchors.shape:
            raise ValueError(
                f"negatives must have the anchors' shape {tuple(anchors.shape)}, got {tuple(negatives.shape)}."
            )
        negative_cosines = (a * F.normalize(negatives.detach().double(), dim=-1)).sum(-1)
    elif a.shape[0] > 1:
        negative_cosines = _off_diagonal(a @ p.T)
    else:
        raise ValueError("A single (anchor, positive) pair has no negatives: give a negative or more pairs.")
    return {
        "alignment": float((a - p).pow(2).sum(-1).mean()),
        "positive_negative_gap": float(positive_cosines.mean() - negative_cosines.mean()),
    }


def embedding_geometry(
    embeddings: torch.Tensor,
    positives: torch.Tensor | None = None,
    negatives: torch.Tensor | None = None,
    t: float = 2.0,
) -> dict[str, float]:
    """:func:`spread_geometry` of ``embeddings`` (with positives and negatives stacked in), plus
    :func:`pair_geometry` when ``positives`` (row-aligned with ``embeddings`` as anchors) are given."""
    parts = [embeddings] + [e for e in (positives, negatives) if e is not None]
    metrics = spread_geometry(torch.cat(parts), t=t)
    if positives is not None:
        metrics.update(pair_geometry(embeddings, positives, negatives))
    return metrics


def _probe_columns(probe: Any) -> list[list[str]]:
    """Texts of the probe as columns: [sentences] or [anchors, positives(, negatives)]."""
    if hasattr(probe, "column_names") and hasattr(probe, "select_columns"):  # datasets.Dataset
        columns = [list(probe[name]) for name in probe.column_names]
    elif isinstance(probe, dict):
        columns = [list(values) for values in probe.values()]
    elif isinstance(probe, Sequence) and probe and all(isinstance(item, str) for item in probe):
        columns = [list(probe)]
    elif isinstance(probe, Sequence) and probe and all(isinstance(item, (tuple, list)) for item in probe):
        widths = {len(item) for item in probe}
        if len(widths) != 1:
            raise ValueError(f"Probe tuples must all have the same length, got lengths {sorted(widths)}.")
        columns = [list(column) for column in zip(*probe, strict=True)]
    else:
        raise ValueError(
            "probe must be a list of sentences, a list of (anchor, positive[, negative]) tuples, a dict of columns "
            f"or a datasets.Dataset with those columns; got {type(probe).__name__}."
        )
    if len(columns) > 3:
        raise ValueError(
            f"probe has {len(columns)} columns; expected 1 (sentences) or 2-3 (anchor, positive[, negative])."
        )
    if any(not all(isinstance(text, str) for text in column) for column in columns):
        raise ValueError("Every probe entry must be a string.")
    if sum(len(column) for column in columns) < 2:
        raise ValueError("The probe needs at least two texts.")
    return columns


class EmbeddingGeometryEvaluator(BaseEvaluator):
    """Evaluator logging the embedding geometry of a fixed probe set (see the module docstring).

    Give it to the trainer like any evaluator (``SentenceTransformerTrainer(evaluator=...)`` or
    ``enable_monitoring(trainer, probe=...)``): its metrics appear as ``eval_<name>_<metric>`` in the logs,
    ``report_to`` and ``eval.jsonl``. A probe of a few hundred to a few thousand texts is enough; keep it
    fixed for the whole run so the curves are comparable.

    Args:
        probe: a list of sentences; or (anchor, positive[, negative]) tuples, a dict of such columns or a
            ``datasets.Dataset`` whose columns are, in order, anchor, positive(, negative).
        name: metric prefix.
        batch_size: encoding batch size.
        t: uniformity temperature.

    Example:
        ::

            evaluator = EmbeddingGeometryEvaluator([("A man plays guitar.", "Someone makes music."), ...])
            metrics = evaluator(model)  # {"geometry_anisotropy": ..., "geometry_effective_rank": ..., ...}
    """

    def __init__(self, probe: Any, name: str = "geometry", batch_size: int = 32, t: float = 2.0) -> None:
        super().__init__()
        self.columns = _probe_columns(probe)
        self.name = name
        self.batch_size = batch_size
        self.t = t
        self.primary_metric = "effective_rank"
        self.greater_is_better = True

    def __call__(
        self, model: SentenceTransformer, output_path: str | None = None, epoch: int = -1, steps: int = -1
    ) -> dict[str, float]:
        encoded = [
            model.encode(column, batch_size=self.batch_size, convert_to_tensor=True, show_progress_bar=False)
            for column in self.columns
        ]
        encoded = [embeddings.float().cpu() for embeddings in encoded]
        if len(encoded) == 1:
            metrics = spread_geometry(encoded[0], t=self.t)
        else:
            metrics = embedding_geometry(encoded[0], encoded[1], encoded[2] if len(encoded) > 2 else None, t=self.t)
        metrics = self.prefix_name_to_metrics(metrics, self.name)
        self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        return metrics

    @property
    def description(self) -> str:
        return "Embedding Geometry"

    def get_config_dict(self) -> dict[str, Any]:
        return {"probe_texts": sum(len(column) for column in self.columns), "t": self.t}
