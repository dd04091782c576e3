"""Bidirectional decoders: the leak probe on every architecture and attention implementation."""

from __future__ import annotations

import pytest
import torch
from conftest import DECODERS, NO_SDPA
from llm2vec_helpers import PADDED_IMPLEMENTATIONS, PROBE_TEXTS, build_backbone, leak_probe

from st_contrast.adapters import add_lora
from st_contrast.modules import is_bidirectional, set_causal

IMPLEMENTATIONS = (*PADDED_IMPLEMENTATIONS, "packed_sdpa")
LAYOUTS = ("single", "right", "left")


def skip_without_sdpa(model_type: str, implementation: str) -> None:
    if implementation == "sdpa" and model_type in NO_SDPA:
        pytest.skip(f"transformers has no sdpa attention for {model_type}")


def probe_texts(layout: str) -> tuple[str, ...]:
    # Row 0 is the shorter one, so a batch pads it; short enough for Mistral's 6-token sliding window
    # not to matter over its 2 layers.
    return PROBE_TEXTS[:1] if layout == "single" else ("A man plays.", PROBE_TEXTS[1])


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("model_type", DECODERS)
def test_leak_probe_every_architecture_and_layout(model_type, implementation, tiny_model_factory):
    skip_without_sdpa(model_type, implementation)
    backbone = build_backbone(tiny_model_factory(model_type), implementation).eval()
    assert is_bidirectional(backbone)
    for layout in LAYOUTS:
        side = "left" if layout == "left" else "right"
        leak = leak_probe(backbone, probe_texts(layout), padding_side=side)
        assert leak["first"] > 1e-4, f"{layout}: token 0 does not see the last token"
        assert leak["others"] < 1e-6, f"{layout}: another row or the padding leaked"
    # the control: the same probe on the causal model sees nothing, so the probe can fail
    set_causal(backbone, True)
    for layout in LAYOUTS:
        side = "left" if layout == "left" else "right"
        assert leak_probe(backbone, probe_texts(layout), padding_side=side)["first"] < 1e-6


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("model_type", DECODERS)
def test_leak_probe_training_with_checkpointing_and_lora(model_type, implementation, tiny_model_factory):
    skip_without_sdpa(model_type, implementation)
    backbone = build_backbone(tiny_model_factory(model_type), implementation)
    getattr(backbone.model, "activation_checkpointing_enable", backbone.model.gradient_checkpointing_enable)()
    backbone.train()
    for side in ("right", "left"):
        leak = leak_probe(backbone, probe_texts(side), padding_side=side, grad=True)
        assert leak["first"] > 1e-4 and leak["others"] < 1e-6
    add_lora(backbone, "auto", r=4, alpha=8, dropout=0.0)
    assert is_bidirectional(backbone)
    for side in ("right", "left"):
        leak = leak_probe(backbone, probe_texts(side), padding_side=side, grad=True)
        assert leak["first"] > 1e-4 and leak["others"] < 1e-6


def token_rows(backbone, texts: list[str], padding_side: str) -> list[torch.Tensor]:
    """Each text's real-token embeddings, whatever the layout."""
    backbone.tokenizer.padding_side = padding_side
    features = backbone.preprocess(texts)
    with torch.no_grad():
        tokens = backbone(features)["token_embeddings"]
    if "cu_seq_lens_q" in features:
        return list(tokens[0].split(features["cu_seq_lens_q"].diff().tolist()))
    return [tokens[i][features["attention_mask"][i].bool()] for i in range(len(texts))]


@pytest.mark.parametrize("model_type", DECODERS)
def test_implementations_agree(model_type, tiny_model_factory, snli_sentences):
    """eager, sdpa (left and right padded) and packed give the same bidirectional token embeddings.

    Sliding windows (the tiny Mistral's is 6) included: the packed kernels follow transformers' eager/sdpa
    bidirectional masks (``sliding_window`` tokens on each side), which is what the padded model computes once a
    plain Sentence Transformers load gives it back.
    """
    texts = [snli_sentences[0], "A dog.", snli_sentences[1][:30]]
    path = tiny_model_factory(model_type)
    reference = token_rows(build_backbone(path, "eager").eval(), texts, "right")
    window = getattr(build_backbone(path, "eager").model.config, "sliding_window", None)
    if window:
        shrunk = build_backbone(path, "eager", config_kwargs={"sliding_window": window - 1}).eval()
        assert not torch.allclose(token_rows(shrunk, texts, "right")[0], reference[0]), "the window must matter"
    for implementation in IMPLEMENTATIONS:
        if implementation == "sdpa" and model_type in NO_SDPA:
            continue
        backbone = build_backbone(path, implementation).eval()
        for side in ("right", "left"):
            for row, target in zip(token_rows(backbone, texts, side), reference, strict=True):
                torch.testing.assert_close(row, target, atol=2e-5, rtol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="flash_attention_2 and the GPU kernels need CUDA")
@pytest.mark.cuda
@pytest.mark.parametrize("implementation", ["flash_attention_2", "packed_varlen", "packed_auto"])
def test_leak_probe_on_gpu(implementation, tiny_model_factory):
    if implementation == "flash_attention_2":
        pytest.importorskip("flash_attn", reason="flash_attention_2 needs the flash-attn package")
    for model_type in DECODERS:
        if model_type == "gemma2" and implementation == "packed_varlen":
            continue  # soft-capped logits: varlen refuses them (tests/test_attention_kernels.py), auto skips it
        backbone = build_backbone(tiny_model_factory(model_type), implementation)
        backbone.to("cuda", torch.bfloat16).eval()
        for side in ("right", "left"):
            leak = leak_probe(backbone, probe_texts(side), padding_side=side)
            assert leak["first"] > 1e-3 and leak["others"] < 1e-6, (model_type, side, leak)
