"""Embedding geometry and weight spectrum metrics against hand computations on constructed inputs."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from st_contrast.callbacks import (
    EmbeddingGeometryEvaluator,
    embedding_geometry,
    pair_geometry,
    spectral_ratio,
    spread_geometry,
    weight_spectrum,
)
from st_contrast.callbacks.spectrum import WeightSpectrumCallback, sharded_parameters_reason


def reference_geometry(x: np.ndarray, t: float = 2.0) -> dict[str, float]:
    """Plain double loops over normalised rows, independent of the torch implementation."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    n = len(x)
    cosines, kernels = [], []
    for i in range(n):
        for j in range(n):
            if i != j:
                cosines.append(float(x[i] @ x[j]))
                kernels.append(math.exp(-t * float(np.sum((x[i] - x[j]) ** 2))))
    sigma = np.linalg.svd(x - x.mean(0), compute_uv=False)
    p = sigma / sigma.sum()
    p = p[p > 0]
    return {
        "anisotropy": sum(cosines) / len(cosines),
        "uniformity": math.log(sum(kernels) / len(kernels)),
        "effective_rank": math.exp(-sum(q * math.log(q) for q in p)),
        "top_singular_share": sigma[0] / sigma.sum(),
    }


def test_collapsed_embeddings():
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]]).repeat(6, 1) * torch.arange(1, 7).unsqueeze(1)  # one direction
    metrics = spread_geometry(x)
    assert metrics["anisotropy"] == pytest.approx(1.0)
    assert metrics["uniformity"] == pytest.approx(0.0, abs=1e-9)  # log(exp(0))
    assert metrics["effective_rank"] == 0.0
    assert metrics["top_singular_share"] == 1.0
    pairs = pair_geometry(x, x.flip(0))
    assert pairs["alignment"] == pytest.approx(0.0, abs=1e-12)
    assert pairs["positive_negative_gap"] == pytest.approx(0.0, abs=1e-12)


def test_orthonormal_isotropic_embeddings():
    d = 8
    x = torch.eye(d)
    metrics = spread_geometry(x)
    # cos = 0 for every distinct pair; squared distance 2 -> uniformity log(exp(-2 * 2)) = -4
    assert metrics["anisotropy"] == pytest.approx(0.0)
    assert metrics["uniformity"] == pytest.approx(-4.0)
    # centred I - 11^T/d has d-1 singular values 1 and one 0: effective rank d-1, top share 1/(d-1)
    assert metrics["effective_rank"] == pytest.approx(d - 1)
    assert metrics["top_singular_share"] == pytest.approx(1 / (d - 1))
    pairs = pair_geometry(x, x)
    assert pairs["alignment"] == pytest.approx(0.0)
    assert pairs["positive_negative_gap"] == pytest.approx(1.0)  # cos 1 to the positive, 0 to the others


def test_cross_polytope_and_circle():
    d = 5
    x = torch.cat([torch.eye(d), -torch.eye(d)])  # +-e_i: mean zero, 2d points
    metrics = spread_geometry(x)
    assert metrics["anisotropy"] == pytest.approx(-1 / (2 * d - 1))  # (|sum|^2 - n) / (n (n-1)) with sum = 0
    assert metrics["effective_rank"] == pytest.approx(d)
    n = 12
    angles = torch.arange(n) * 2 * math.pi / n
    circle = torch.zeros(n, 6)
    circle[:, 0], circle[:, 1] = torch.cos(angles), torch.sin(angles)
    metrics = spread_geometry(circle)
    assert metrics["effective_rank"] == pytest.approx(2.0)  # two equal singular values
    assert metrics["top_singular_share"] == pytest.approx(0.5)
    assert metrics["anisotropy"] == pytest.approx(-1 / (n - 1))


def test_random_embeddings_match_reference():
    generator = np.random.default_rng(0)
    x = generator.normal(size=(20, 7)) + 0.5
    metrics = spread_geometry(torch.from_numpy(x))
    reference = reference_geometry(x)
    for key, value in reference.items():
        assert metrics[key] == pytest.approx(value, rel=1e-9), key


def test_pairs_with_explicit_negatives():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[1.0, 1.0], [0.0, 2.0]])  # cos 1/sqrt2 and 1
    n = torch.tensor([[-1.0, 0.0], [1.0, 0.0]])  # cos -1 and 0
    metrics = pair_geometry(a, p, n)
    assert metrics["positive_negative_gap"] == pytest.approx((1 / math.sqrt(2) + 1) / 2 - (-1 + 0) / 2)
    # |a - p/|p||^2 = 2 - 2 cos
    assert metrics["alignment"] == pytest.approx(((2 - 2 / math.sqrt(2)) + 0) / 2)
    combined = embedding_geometry(a, p, n)
    assert combined["anisotropy"] == pytest.approx(reference_geometry(torch.cat([a, p, n]).numpy())["anisotropy"])


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="n >= 2"):
        spread_geometry(torch.ones(1, 4))
    with pytest.raises(ValueError, match="same shape"):
        pair_geometry(torch.ones(2, 4), torch.ones(3, 4))
    with pytest.raises(ValueError, match="probe must be"):
        EmbeddingGeometryEvaluator(42)
    with pytest.raises(ValueError, match="same length"):
        EmbeddingGeometryEvaluator([("a", "b"), ("c",)])


def test_evaluator_matches_reference_on_model(minilm_path):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(minilm_path, device="cpu")
    pairs = [
        ("A man plays a guitar.", "Someone makes music."),
        ("A dog runs in the park.", "An animal is outside."),
        ("Two kids eat ice cream.", "Children have a dessert."),
        ("The stock market fell.", "Shares lost value today."),
    ]
    metrics = EmbeddingGeometryEvaluator(pairs, name="probe")(model)
    anchors = model.encode([a for a, _ in pairs])
    positives = model.encode([p for _, p in pairs])
    reference = reference_geometry(np.concatenate([anchors, positives]).astype(np.float64))
    for key, value in reference.items():
        assert metrics[f"probe_{key}"] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    a = anchors / np.linalg.norm(anchors, axis=1, keepdims=True)
    p = positives / np.linalg.norm(positives, axis=1, keepdims=True)
    cos = a @ p.T
    gap = np.mean(np.diag(cos)) - (cos.sum() - np.trace(cos)) / (len(pairs) * (len(pairs) - 1))
    assert metrics["probe_positive_negative_gap"] == pytest.approx(gap, rel=1e-4)
    assert metrics["probe_alignment"] == pytest.approx(np.mean(np.sum((a - p) ** 2, axis=1)), rel=1e-4)


def test_probe_given_twice_replaces_the_first():
    from sentence_transformers.base.evaluation.evaluator import BaseEvaluator
    from sentence_transformers.base.evaluation.sequential import SequentialEvaluator

    from st_contrast.callbacks import with_geometry_probe

    first = with_geometry_probe(None, ["a", "b"])
    assert isinstance(first, EmbeddingGeometryEvaluator)
    assert with_geometry_probe(first, ["c", "d"]).columns == [["c", "d"]]
    user = BaseEvaluator()
    combined = with_geometry_probe(with_geometry_probe(user, ["a", "b"]), ["e", "f"])
    assert isinstance(combined, SequentialEvaluator)
    assert combined.evaluators[0] is user and combined.evaluators[1].columns == [["e", "f"]]
    assert len(combined.evaluators) == 2


def test_spectral_ratio_by_hand():
    assert spectral_ratio(torch.diag(torch.tensor([3.0, 1.0]))) == pytest.approx(1.5)  # 3 / mean(3, 1)
    rotation = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(0)))[0]
    assert spectral_ratio(4 * rotation) == pytest.approx(1.0, rel=1e-5)
    with pytest.raises(ValueError, match="2-D"):
        spectral_ratio(torch.ones(3))


def test_weight_spectrum_patterns_and_numpy_reference():
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    metrics = weight_spectrum(model, [r"^2\."])
    sigma = np.linalg.svd(model[2].weight.detach().numpy().astype(np.float64), compute_uv=False)
    assert set(metrics) == {"spectrum/2", "spectrum/mean", "spectrum/max"}
    assert metrics["spectrum/2"] == pytest.approx(sigma[0] / sigma.mean(), rel=1e-5)
    assert set(weight_spectrum(model, per_matrix=False)) == {"spectrum/mean", "spectrum/max"}
    with pytest.raises(ValueError, match="No nn.Linear weight matches"):
        weight_spectrum(model, ["query"])


def test_spectrum_skips_sharded_weights(caplog):
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    args = SimpleNamespace(fsdp=[], hf_deepspeed_config=None)
    assert sharded_parameters_reason(args, model) is None
    assert "FSDP" in sharded_parameters_reason(SimpleNamespace(fsdp=["full_shard"]), model)
    model[0].weight.ds_numel = 16  # what DeepSpeed ZeRO-3 puts on partitioned parameters
    callback = WeightSpectrumCallback(1)
    state = SimpleNamespace(global_step=1, is_world_process_zero=True)
    with caplog.at_level("WARNING"):
        callback.on_train_begin(args, state, None, model=model)
    assert "ZeRO-3" in caplog.text
    callback.on_step_end(args, state, None, model=model)
    assert callback.metrics_for_log(args, state) == {}
    with pytest.raises(ValueError, match="positive integer"):
        WeightSpectrumCallback(0)
