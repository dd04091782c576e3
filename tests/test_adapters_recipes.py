"""SGPT recipes against stock ST models built by hand: same embeddings at init, right parameters train."""

from __future__ import annotations

import pytest
import torch
from adapter_utils import changed_parameters, embed, snapshot, train_steps
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Transformer
from sentence_transformers.sentence_transformer.modules import Pooling

from st_contrast import load_model
from st_contrast.adapters import add_lora, merge_and_save
from st_contrast.modules import FlashTransformer
from st_contrast.recipes import asymmetric_model, linear_stack, sgpt_bitfit_model


def stock_model(path: str, pooling_mode: str) -> SentenceTransformer:
    backbone = Transformer(path, model_kwargs={"attn_implementation": "sdpa"})
    return SentenceTransformer(
        modules=[backbone, Pooling(backbone.get_embedding_dimension(), pooling_mode)], device="cpu"
    )


def test_sgpt_bitfit_decoder_with_linear_stacks(tiny_model_factory, snli_sentences, tmp_path):
    path = tiny_model_factory("qwen2")
    texts = snli_sentences[:12]
    model = sgpt_bitfit_model(
        path, packed=True, linear_before=1, linear_after=2, attention_backend="sdpa", device="cpu"
    )
    assert [type(m).__name__ for m in model] == ["Transformer", "Dense", "Pooling", "Dense", "Dense"]
    assert isinstance(model[0], FlashTransformer)
    # Identity-initialised stacks: the recipe starts from the stock weighted-mean embeddings.
    torch.testing.assert_close(embed(model, texts), embed(stock_model(path, "weightedmean"), texts), atol=1e-5, rtol=0)

    before = snapshot(model)
    train_steps(model, texts[:6], texts[6:])
    changed = changed_parameters(before, model)
    backbone_changed = {n for n in changed if n.startswith("0.")}
    assert backbone_changed and all(n.endswith(".bias") for n in backbone_changed)
    assert {"1.linear.weight", "3.linear.weight", "4.linear.weight"} <= changed

    model.save(str(tmp_path / "sgpt"))
    reloaded = load_model(str(tmp_path / "sgpt"), device="cpu")
    torch.testing.assert_close(embed(reloaded, texts), embed(model, texts))


def test_sgpt_weighted_mean_of_a_batch_is_each_text_alone_for_a_left_padding_tokenizer(tiny_model_factory):
    texts = ["A dog.", "A man plays a guitar on a crowded street corner.", "Two women talk."]
    model = sgpt_bitfit_model(tiny_model_factory("qwen2"), processor_kwargs={"padding_side": "left"}, device="cpu")
    assert model[0].tokenizer.padding_side == "right"
    alone = torch.cat([embed(model, [text]) for text in texts])  # one text: no padding at all
    torch.testing.assert_close(embed(model, texts), alone, atol=1e-5, rtol=1e-4)


def test_sgpt_on_a_decoder_without_a_pad_token(tiny_model_factory, tmp_path):
    """GPT-Neo / GPT-J, SGPT's own models, have no pad token: a batch is padded with EOS, masked out."""
    import shutil

    from transformers import AutoTokenizer

    path = tmp_path / "no_pad"
    shutil.copytree(tiny_model_factory("gpt_neo"), path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.pad_token = None
    tokenizer.save_pretrained(path)
    texts = ["A dog.", "A man plays a guitar on a crowded street corner.", "Two women talk."]
    model = sgpt_bitfit_model(str(path), device="cpu")
    alone = torch.cat([embed(model, [text]) for text in texts])
    torch.testing.assert_close(embed(model, texts), alone, atol=1e-5, rtol=1e-4)


def test_linear_stack_before_pooling_acts_on_tokens():
    (dense,) = linear_stack(8, 1, before_pooling=True)
    tokens = torch.randn(2, 5, 8)
    torch.testing.assert_close(dense({"token_embeddings": tokens})["token_embeddings"], tokens)


def test_asymmetric_towers_with_lora_merge_and_reload(minilm_path, snli_sentences, tmp_path):
    queries, documents = snli_sentences[:8], snli_sentences[8:16]
    model = asymmetric_model(minilm_path, device="cpu")
    stock = SentenceTransformer(minilm_path, device="cpu")
    stock_embeddings = embed(stock, queries)
    # Both towers start as the stock model (MiniLM's pooling is mean, normalisation aside).
    for kwargs in ({"task": "query"}, {"task": "document"}):
        torch.testing.assert_close(
            torch.nn.functional.normalize(embed(model, queries, **kwargs), dim=-1), stock_embeddings, atol=1e-5, rtol=0
        )

    add_lora(model, "encoder")
    assert all(tower[0].model.peft_config for tower in model[0].sub_modules.values())
    train_steps(model, queries, documents, lr=1e-3, anchor_task="query", positive_task="document")
    query_embeddings = embed(model, queries, task="query")
    document_embeddings = embed(model, queries, task="document")
    assert not torch.allclose(query_embeddings, document_embeddings, atol=1e-4)  # the towers trained apart

    # sentence-transformers 6.2 cannot reload unmerged adapters inside Router towers: a clear error says so.
    model.save(str(tmp_path / "asym-adapters"))
    with pytest.raises(ValueError, match="Router tower.*merge_and_save"):
        load_model(str(tmp_path / "asym-adapters"))

    merge_and_save(model, tmp_path / "asym")
    reloaded = SentenceTransformer(str(tmp_path / "asym"), device="cpu")
    torch.testing.assert_close(embed(reloaded, queries, task="query"), query_embeddings, atol=1e-5, rtol=0)
    torch.testing.assert_close(embed(reloaded, queries, task="document"), document_embeddings, atol=1e-5, rtol=0)
