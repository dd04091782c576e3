"""to_flash: converting a loaded stock model keeps its embeddings and its save/reload path."""

from __future__ import annotations

import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Pooling

from st_contrast import load_model, to_flash
from st_contrast.modules import FlashTransformer, attention_backend


def test_to_flash_keeps_embeddings_and_settings(minilm_path, snli_sentences, tmp_path):
    stock = SentenceTransformer(minilm_path, device="cpu")
    texts = ["", *snli_sentences[:5], " ".join(snli_sentences[:60])]
    expected = stock.encode(texts, convert_to_tensor=True)

    converted = to_flash(SentenceTransformer(minilm_path, device="cpu"), attention_backend="sdpa")
    assert isinstance(converted[0], FlashTransformer) and attention_backend(converted[0]) == "sdpa"
    assert converted.max_seq_length == stock.max_seq_length
    assert (converted.encode(texts, convert_to_tensor=True) - expected).abs().max().item() < 1e-5

    converted.save(str(tmp_path))
    for reloaded in (load_model(str(tmp_path), device="cpu"), SentenceTransformer(str(tmp_path), device="cpu")):
        assert (reloaded.encode(texts, convert_to_tensor=True) - expected).abs().max().item() < 1e-5


def test_to_flash_keeps_dtype(tiny_model_factory):
    from sentence_transformers.base.modules import Transformer

    model = SentenceTransformer(modules=[Transformer(tiny_model_factory("bert")), Pooling(32)], device="cpu")
    model.to(torch.bfloat16)
    to_flash(model)
    assert next(model[0].parameters()).dtype == torch.bfloat16


def test_to_flash_without_transformer_is_refused():
    model = SentenceTransformer(modules=[Pooling(8)], device="cpu")
    with pytest.raises(ValueError, match="no sentence_transformers Transformer module to pack"):
        to_flash(model)
