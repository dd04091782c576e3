"""encode(output_value="token_embeddings" / None) on packed modules returns what stock Sentence Transformers does."""

from __future__ import annotations

import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Transformer
from sentence_transformers.sentence_transformer.modules import Pooling

from st_contrast.modules import BidirectionalFlashTransformer, BidirectionalTransformer, FlashTransformer
from st_contrast.modules.packed_outputs import unpack_features


def texts_of(sentences: list[str]) -> list[str]:
    """1-token (empty) to truncated inputs, unsorted, more than one encode batch."""
    long = " ".join(sentences[:40])
    return ["", sentences[0], long, "a", sentences[1] + " " + sentences[2], long[::-1], sentences[3], "b c"]


def pair(path: str, packed_class=FlashTransformer, padded_class=Transformer, **kwargs):
    models = []
    for backbone in (padded_class(path, **kwargs), packed_class(path, attention_backend="sdpa", **kwargs)):
        models.append(SentenceTransformer(modules=[backbone, Pooling(32, "mean")], device="cpu").eval())
    return models


@pytest.mark.parametrize("model_type", ["bert", "llama", "nomic_bert"])
def test_token_embeddings_equal_stock_per_sequence(model_type, tiny_model_factory, snli_sentences):
    stock, packed = pair(tiny_model_factory(model_type))
    texts = texts_of(snli_sentences)
    expected = stock.encode(texts, output_value="token_embeddings", batch_size=3)
    actual = packed.encode(texts, output_value="token_embeddings", batch_size=3)
    assert len(actual) == len(texts)
    for row, (got, want) in enumerate(zip(actual, expected, strict=True)):
        assert got.shape == want.shape, (row, got.shape, want.shape)
        assert (got - want).abs().max().item() < 1e-5, row
    # sentence embeddings from the same (padded-output) path stay equal too
    torch.testing.assert_close(
        packed.encode(texts, convert_to_tensor=True), stock.encode(texts, convert_to_tensor=True), atol=1e-5, rtol=0
    )


def test_output_value_none_gives_stock_rows(tiny_model_factory, snli_sentences):
    stock, packed = pair(tiny_model_factory("bert"))
    texts = texts_of(snli_sentences)[:4]
    expected, actual = (model.encode(texts, output_value=None) for model in (stock, packed))
    for got, want in zip(actual, expected, strict=True):
        assert "cu_seq_lens_q" not in got
        torch.testing.assert_close(got["sentence_embedding"], want["sentence_embedding"], atol=1e-5, rtol=0)
        mask = want["attention_mask"].bool()
        torch.testing.assert_close(
            got["token_embeddings"][got["attention_mask"].bool()], want["token_embeddings"][mask], atol=1e-5, rtol=0
        )


def test_bidirectional_packed_module_with_instructions(tiny_model_factory):
    """LLM2Vec tokenization (EOS, instruction mask) unpacks with the tokens it belongs to."""
    path = tiny_model_factory("qwen2")
    stock, packed = pair(path, BidirectionalFlashTransformer, BidirectionalTransformer)
    texts = ["A man plays a guitar.", "Two dogs run.", "A woman is slicing an onion in the kitchen."]
    expected = stock.encode(texts, output_value="token_embeddings", prompt="Retrieve: ")
    actual = packed.encode(texts, output_value="token_embeddings", prompt="Retrieve: ")
    for got, want in zip(actual, expected, strict=True):
        assert got.shape == want.shape and (got - want).abs().max().item() < 1e-5


def test_training_and_no_grad_forwards_stay_packed(tiny_model_factory):
    _, packed = pair(tiny_model_factory("bert"))
    features = packed.preprocess(["one two three", "four"])
    with torch.no_grad():
        output = packed[0](dict(features))
    assert output["token_embeddings"].shape[0] == 1 and "cu_seq_lens_q" in output
    with torch.inference_mode():
        unpacked = packed[0](dict(features))
    lengths = features["cu_seq_lens_q"].diff().tolist()
    assert unpacked["token_embeddings"].shape[:2] == (2, max(lengths))
    assert unpacked["attention_mask"].sum(dim=1).tolist() == lengths
    assert "cu_seq_lens_q" not in unpacked


@pytest.fixture
def no_special_tokens_decoder(tiny_model_factory, tmp_path):
    """The tiny GPT-NeoX with a tokenizer that adds no special tokens (as GPT-NeoX's and Qwen's): "" has no tokens."""
    import shutil

    from tokenizers import processors
    from transformers import AutoTokenizer

    path = tmp_path / "gpt_neox_no_specials"
    shutil.copytree(tiny_model_factory("gpt_neox"), path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.backend_tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    tokenizer.save_pretrained(path)
    assert tokenizer("")["input_ids"] == []
    return str(path)


@pytest.mark.parametrize("pooling", ["lasttoken", "mean"])
def test_a_text_without_tokens_encodes_as_stock_and_is_refused_in_packed_training(no_special_tokens_decoder, pooling):
    texts = ["a man plays", "", "hello there friend"]
    stock, packed = (
        SentenceTransformer(modules=[backbone, Pooling(32, pooling)], device="cpu").eval()
        for backbone in (Transformer(no_special_tokens_decoder), FlashTransformer(no_special_tokens_decoder))
    )
    expected = stock.encode(texts, convert_to_tensor=True)
    assert expected[1].abs().max() == 0  # padded, a text without tokens embeds as zeros
    torch.testing.assert_close(packed.encode(texts, convert_to_tensor=True), expected, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match=r"position\(s\) \[1\] tokenize to no tokens"):
        packed(packed.preprocess(texts))


def test_unpack_features_layout():
    cu = torch.tensor([0, 3, 4, 6], dtype=torch.int32)
    features = {
        "token_embeddings": torch.arange(12.0).view(1, 6, 2),
        "input_ids": torch.arange(1, 7).view(1, 6),
        "cu_seq_lens_q": cu,
        "max_length_q": 3,
        "prompt_length": 2,
    }
    unpack_features(features)
    assert features["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]
    assert features["input_ids"].tolist() == [[1, 2, 3], [4, 0, 0], [5, 6, 0]]
    assert features["token_embeddings"][2].tolist() == [[8.0, 9.0], [10.0, 11.0], [0.0, 0.0]]
    assert "cu_seq_lens_q" not in features and "max_length_q" not in features and features["prompt_length"] == 2
