"""Bidirectionality survives save and reload: st_contrast modules and stock Sentence Transformers."""

from __future__ import annotations

import json

import pytest
import torch
from llm2vec_helpers import build_backbone, leak_probe
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Transformer
from sentence_transformers.sentence_transformer.modules import Pooling

from st_contrast import load_model
from st_contrast.adapters import add_lora
from st_contrast.modules import (
    BidirectionalFlashTransformer,
    BidirectionalTransformer,
    FlashTransformer,
    InstructionPooling,
    is_bidirectional,
    set_causal,
)

TEXTS = ["A man plays a guitar.", "Two dogs run.", "A woman is slicing an onion in the kitchen."]
PROMPT = "Retrieve similar sentences: "


@pytest.mark.parametrize("implementation", ["sdpa", "packed_sdpa"])
def test_st_contrast_module_round_trip(implementation, tiny_model_factory, tmp_path):
    backbone = build_backbone(tiny_model_factory("qwen2"), implementation, sgpt_brackets=False, max_seq_length=24)
    model = SentenceTransformer(modules=[backbone, InstructionPooling(32, "lasttoken")], device="cpu").eval()
    before = model.encode(TEXTS, prompt=PROMPT, convert_to_tensor=True)
    model.save(str(tmp_path))
    assert json.loads((tmp_path / "config.json").read_text())["is_causal"] is False

    reloaded = load_model(str(tmp_path), device="cpu").eval()
    assert type(reloaded[0]) is type(backbone) and isinstance(reloaded[1], InstructionPooling)
    assert reloaded[0].append_eos and reloaded[0].max_seq_length == 24 and is_bidirectional(reloaded)
    torch.testing.assert_close(reloaded.encode(TEXTS, prompt=PROMPT, convert_to_tensor=True), before, atol=0, rtol=0)
    assert leak_probe(reloaded[0])["first"] > 1e-4

    padded = load_model(str(tmp_path), device="cpu", packed=False).eval()
    torch.testing.assert_close(padded.encode(TEXTS, prompt=PROMPT, convert_to_tensor=True), before, atol=1e-5, rtol=0)
    trusted = SentenceTransformer(str(tmp_path), device="cpu", trust_remote_code=True).eval()
    torch.testing.assert_close(trusted.encode(TEXTS, prompt=PROMPT, convert_to_tensor=True), before, atol=1e-5, rtol=0)


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_stock_sentence_transformer_reloads_bidirectional(implementation, tiny_model_factory, tmp_path):
    """A stock ``Transformer`` made bidirectional reloads bidirectional with plain ``SentenceTransformer(dir)``.

    Only ``is_causal: false`` in ``config.json`` carries it: the reloaded attention modules keep
    ``is_causal=True``, and transformers (>= 5.2) still runs them bidirectionally, padded or not.
    """
    stock = Transformer(tiny_model_factory("llama"), model_kwargs={"attn_implementation": implementation})
    model = SentenceTransformer(modules=[set_causal(stock, False), Pooling(32, "mean")], device="cpu").eval()
    before = model.encode(TEXTS, convert_to_tensor=True)
    model.save(str(tmp_path))

    kwargs = {"model_kwargs": {"attn_implementation": implementation}}  # not saved; sdpa is the default
    reloaded = SentenceTransformer(str(tmp_path), device="cpu", **kwargs).eval()
    assert type(reloaded[0]) is Transformer and reloaded[0].model.config.is_causal is False
    assert reloaded[0].model.config._attn_implementation == implementation
    torch.testing.assert_close(reloaded.encode(TEXTS, convert_to_tensor=True), before, atol=1e-6, rtol=1e-5)
    for texts, side in ((TEXTS[:1], "right"), (TEXTS[1:], "right"), (TEXTS[1:], "left")):
        leak = leak_probe(reloaded[0], texts, padding_side=side)
        assert leak["first"] > 1e-4 and leak["others"] < 1e-6, (texts, side)


def test_flash_transformer_made_bidirectional_reloads(tiny_model_factory, tmp_path):
    backbone = set_causal(FlashTransformer(tiny_model_factory("gemma"), attention_backend="sdpa"), False)
    model = SentenceTransformer(modules=[backbone, Pooling(32, "mean")], device="cpu").eval()
    before = model.encode(TEXTS, convert_to_tensor=True)
    model.save(str(tmp_path))
    reloaded = load_model(str(tmp_path), device="cpu", attention_backend="sdpa").eval()  # the kernel is not saved
    torch.testing.assert_close(reloaded.encode(TEXTS, convert_to_tensor=True), before, atol=0, rtol=0)
    assert leak_probe(reloaded[0], TEXTS[1:])["first"] > 1e-4


def test_lora_adapter_model_reloads_bidirectional(tiny_model_factory, tmp_path):
    """Unmerged adapters reload on the original (causal) base: the module setting restores bidirectionality."""
    backbone = BidirectionalTransformer(tiny_model_factory("mistral"))
    model = SentenceTransformer(modules=[backbone, InstructionPooling(32, "mean")], device="cpu")
    add_lora(model, "decoder", r=4, alpha=8, dropout=0.0)
    for parameter in model.parameters():
        if parameter.requires_grad:
            torch.nn.init.normal_(parameter, std=0.05)  # LoRA B starts at zero: make the adapter matter
    model.eval()
    before = model.encode(TEXTS, convert_to_tensor=True)
    model.save(str(tmp_path))
    reloaded = load_model(str(tmp_path), device="cpu").eval()
    assert is_bidirectional(reloaded)
    torch.testing.assert_close(reloaded.encode(TEXTS, convert_to_tensor=True), before, atol=1e-6, rtol=1e-5)


def test_causal_setting_is_kept(tiny_model_factory, tmp_path):
    """``bidirectional=False`` (SGPT-style causal embedder with EOS) stays causal after reload."""
    backbone = BidirectionalFlashTransformer(tiny_model_factory("llama"), bidirectional=False, attention_backend="sdpa")
    model = SentenceTransformer(modules=[backbone, InstructionPooling(32, "lasttoken")], device="cpu")
    model.save(str(tmp_path))
    reloaded = load_model(str(tmp_path), device="cpu")
    assert reloaded[0].bidirectional is False and reloaded[0].model.config.is_causal is True
    assert leak_probe(reloaded[0])["first"] < 1e-6
