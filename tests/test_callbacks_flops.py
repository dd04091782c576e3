"""FLOPs per token and MFU against a hand-computed BERT-base figure."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertModel

from st_contrast.callbacks import (
    estimate_flops,
    model_flops_utilization,
    peak_flops_per_device,
    training_flops_per_token,
)
from st_contrast.callbacks.flops import PEAK_FLOPS, training_precision

D, LAYERS, FFN = 768, 12, 3072


def bert_base_non_embedding_params() -> int:
    """By hand: per layer Q, K, V, O (4 d^2 + 4 d), FFN (2 d * 4d + 4d + d), two LayerNorms (4 d);
    plus the embedding LayerNorm (2 d). Word/position/type tables and the pooler are left out."""
    per_layer = 4 * D * D + 4 * D + D * FFN + FFN + FFN * D + D + 2 * 2 * D
    return LAYERS * per_layer + 2 * D


def test_bert_base_flops_and_mfu_by_hand():
    with torch.device("meta"):
        model = BertModel(BertConfig())  # BERT-base: 12 layers, d = 768, no weights materialised
    estimate = estimate_flops(model)
    assert estimate.non_embedding_params == bert_base_non_embedding_params() == 85_056_000
    assert (estimate.num_layers, estimate.hidden_size) == (LAYERS, D)

    # PaLM appendix B: 6 N + 12 L d s per token, s = 128
    per_token = 6 * 85_056_000 + 12 * 12 * 768 * 128
    assert per_token == 524_491_776
    assert training_flops_per_token(85_056_000, 12, 768, 128) == per_token
    assert estimate.flops_per_token(128) == per_token
    # 100k real tokens/s on one A100 (312 TFLOPs bf16 dense): 16.81% MFU
    assert model_flops_utilization(per_token * 100_000, 1.0, 312e12) == pytest.approx(0.168106, abs=1e-6)
    # the same throughput spread over 4 GPUs is a quarter of the utilisation
    assert model_flops_utilization(per_token * 100_000, 1.0, 312e12, num_devices=4) == pytest.approx(
        0.168106 / 4, abs=1e-6
    )


def test_mixed_lengths_use_the_sum_of_squares():
    estimate = estimate_flops(
        BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64))
    )
    lengths = [3, 10, 7]
    exact = sum(length * estimate.flops_per_token(length) for length in lengths)  # each token attends its own sequence
    assert estimate.training_flops(sum(lengths), sum(length**2 for length in lengths)) == pytest.approx(exact)


def test_sentence_transformer_backbone_is_found(minilm_path):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(minilm_path, device="cpu")
    estimate = estimate_flops(model)
    config = model[0].auto_model.config
    d, layers, ffn = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    per_layer = 4 * d * d + 4 * d + 2 * d * ffn + ffn + d + 4 * d
    assert estimate.non_embedding_params == layers * per_layer + 2 * d
    with pytest.raises(ValueError, match="Cannot find a transformer backbone"):
        estimate_flops(torch.nn.Linear(3, 3))


def test_only_the_backbone_is_counted_behind_a_dense_head_or_a_router(minilm_path):
    """Sentence Transformers gives the whole model a ``config`` (its backbone's): N must still be the backbone's
    alone, neither the ``Dense`` head (it runs once per sequence) nor a second route's backbone."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Router, Transformer
    from sentence_transformers.sentence_transformer.modules import Dense, Pooling

    expected = estimate_flops(SentenceTransformer(minilm_path, device="cpu")[0].auto_model)
    with_dense = SentenceTransformer(modules=[Transformer(minilm_path), Pooling(384), Dense(384, 1024)], device="cpu")
    routes = {name: [Transformer(minilm_path), Pooling(384)] for name in ("query", "document")}
    routed = SentenceTransformer(modules=[Router(routes, default_route="query")], device="cpu")
    assert estimate_flops(with_dense) == expected
    assert estimate_flops(routed) == expected


def test_peak_table_and_precision(monkeypatch):
    from types import SimpleNamespace

    assert peak_flops_per_device("cpu") is None
    with pytest.raises(ValueError, match="precision"):
        peak_flops_per_device("cpu", "int8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for name, expected in (
        ("NVIDIA H100 80GB HBM3", 989.4e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA H200", 989.4e12),
        ("NVIDIA H200 NVL", 835.5e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA GeForce RTX 4090", None),
    ):
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None, name=name: name)
        assert peak_flops_per_device("cuda:0", "bf16") == expected, name
    assert PEAK_FLOPS["A100"]["tf32"] == 156e12
    assert training_precision(SimpleNamespace(bf16=True, fp16=False)) == "bf16"
    with pytest.raises(ValueError, match="positive"):
        model_flops_utilization(1.0, 0.0, 1e12)


@pytest.mark.parametrize(
    ("device_name", "bf16", "expected_peak"),
    [
        ("NVIDIA H100 80GB HBM3", True, 989.4e12),
        ("NVIDIA H200", True, 989.4e12),
        ("NVIDIA A100-SXM4-80GB", False, 19.5e12),
    ],
)
def test_monitor_on_a_gpu_resolves_its_peak_for_mfu(monkeypatch, device_name, bf16, expected_peak):
    """What a GPU run's monitor does at train begin (device name mocked): the peak of that GPU in the run's precision,
    from which every log (and the progress bar) gets ``mfu``."""
    from types import SimpleNamespace

    from transformers import TrainerControl, TrainerState

    from st_contrast.callbacks import ThroughputMonitor

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: device_name)
    monkeypatch.setattr(torch, "get_float32_matmul_precision", lambda: "highest")
    monitor = ThroughputMonitor()
    args = SimpleNamespace(device=torch.device("cuda:0"), world_size=1, bf16=bf16, fp16=False, tf32=None)
    with torch.device("meta"):
        model = BertModel(BertConfig())
    monitor.on_train_begin(args, TrainerState(), TrainerControl(), model=model)
    assert monitor.resolved_peak_flops == expected_peak
    assert monitor.run_info()["device"] == device_name
    assert monitor.flops.non_embedding_params == bert_base_non_embedding_params()
