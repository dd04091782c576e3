"""BitFit: an optimizer step moves bias terms only (and embeddings / heads when asked)."""

from __future__ import annotations

import pytest
import torch
from adapter_utils import changed_parameters, embed, snapshot, train_steps
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Dense, Transformer
from sentence_transformers.sentence_transformer.modules import Pooling

import st_contrast
from st_contrast.adapters import apply_bitfit
from st_contrast.modules import FlashTransformer


def is_bias(name: str) -> bool:
    return name.endswith(".bias")


def model_with_head(path: str, backbone_class=Transformer) -> SentenceTransformer:
    backbone = backbone_class(path)
    dim = backbone.get_embedding_dimension()
    torch.manual_seed(0)
    return SentenceTransformer(modules=[backbone, Pooling(dim, "mean"), Dense(dim, 16)], device="cpu")


@pytest.mark.parametrize(
    ("model_type", "backbone_class"), [("bert", Transformer), ("bert", FlashTransformer), ("qwen2", FlashTransformer)]
)
def test_step_changes_biases_only(model_type, backbone_class, tiny_model_factory, snli_sentences):
    model = model_with_head(tiny_model_factory(model_type), backbone_class)
    count = apply_bitfit(model)
    names = dict(model.named_parameters())
    assert count.trainable == sum(p.numel() for n, p in names.items() if is_bias(n))
    assert count.total == sum(p.numel() for p in names.values())

    before = snapshot(model)
    train_steps(model, snli_sentences[:8], snli_sentences[8:16])
    changed = changed_parameters(before, model)
    assert changed and all(is_bias(name) for name in changed), sorted(changed)
    # Every bias that takes part in the forward pass moved (the head's bias included).
    assert "2.linear.bias" in changed
    assert sum(".attention." in n or "self_attn" in n for n in changed) > 0


def test_embeddings_and_heads_optionally_train(tiny_model_factory, snli_sentences):
    model = model_with_head(tiny_model_factory("bert"))
    apply_bitfit(model, train_embeddings=True, train_heads=True)
    before = snapshot(model)
    train_steps(model, snli_sentences[:8], snli_sentences[8:16])
    changed = changed_parameters(before, model)
    word_embeddings = "0.model.embeddings.word_embeddings.weight"
    assert {word_embeddings, "2.linear.weight"} <= changed
    assert all(is_bias(name) for name in changed - {word_embeddings, "2.linear.weight"}), sorted(changed)


def test_minilm_bitfit_survives_save_and_reload(minilm_path, snli_sentences, tmp_path):
    model = SentenceTransformer(minilm_path, device="cpu")
    apply_bitfit(model)
    before = snapshot(model)
    train_steps(model, snli_sentences[:8], snli_sentences[8:16], lr=1e-3)
    assert all(is_bias(name) for name in changed_parameters(before, model))
    model.save(str(tmp_path / "bitfit"))
    reloaded = SentenceTransformer(str(tmp_path / "bitfit"), device="cpu")
    torch.testing.assert_close(embed(reloaded, snli_sentences[:16]), embed(model, snli_sentences[:16]))
    assert not torch.allclose(
        embed(SentenceTransformer(minilm_path, device="cpu"), snli_sentences[:16]), embed(model, snli_sentences[:16])
    )


def test_model_without_biases_is_refused(tiny_model_factory):
    model = model_with_head(tiny_model_factory("llama"))
    with pytest.raises(ValueError, match="no bias terms in LlamaModel.*add_lora"):
        apply_bitfit(model)


def test_lazy_public_name():
    assert st_contrast.apply_bitfit is apply_bitfit
