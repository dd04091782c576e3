"""Every column of a packed batch in one forward: the merged features, the forward count, and stock ST's loss."""

from __future__ import annotations

import pytest
import torch
from loss_helpers import assert_same_gradients, gradients, tiny_model, tokenize_columns
from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss, MultipleNegativesRankingLoss

from st_contrast.losses import InfoNCELoss, SigLIPLoss
from st_contrast.losses.merged_columns import embed_columns, merge_packed_columns
from st_contrast.modules import enable_packing


@pytest.fixture
def columns(snli_sentences):
    return [snli_sentences[0:6], snli_sentences[6:12], [" ".join(snli_sentences[12:15]), *snli_sentences[15:20]]]


@pytest.fixture
def packed(tiny_model_factory):
    model = tiny_model(tiny_model_factory("bert"))
    enable_packing(model[0], "sdpa")
    return model


def test_merged_columns_are_the_packed_batch_of_all_their_texts(packed, columns):
    merged = merge_packed_columns(tokenize_columns(packed, columns))
    expected = packed.preprocess([text for column in columns for text in column])
    assert merged.keys() == expected.keys()
    for key, value in expected.items():
        if torch.is_tensor(value):
            assert torch.equal(merged[key], value), key
        else:
            assert merged[key] == value, key


def test_info_nce_embeds_packed_columns_in_one_forward_with_stock_losses_and_gradients(
    packed, tiny_model_factory, columns
):
    forwards = []
    packed[0].register_forward_hook(lambda module, args, output: forwards.append(1))
    loss = InfoNCELoss(packed, temperature=0.05, learnable_temperature=False)(tokenize_columns(packed, columns), None)
    loss.backward()
    assert len(forwards) == 1

    stock = tiny_model(tiny_model_factory("bert"))  # padded, one forward per column or ST's own merging
    expected = MultipleNegativesRankingLoss(stock, scale=20.0)(tokenize_columns(stock, columns), None)
    expected.backward()
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)
    assert_same_gradients(gradients(packed), gradients(stock))


def test_columns_that_differ_beyond_their_tokens_run_one_forward_each(packed, columns):
    queries = packed.preprocess(columns[0], prompt="query: ")
    documents = packed.preprocess(columns[1])
    assert merge_packed_columns([queries, documents]) is None  # a prompt on one column only
    with_prompt = packed.preprocess(columns[1], prompt="represent this passage: ")
    assert merge_packed_columns([queries, with_prompt]) is None  # another prompt length

    forwards = []
    packed[0].register_forward_hook(lambda module, args, output: forwards.append(1))
    with torch.no_grad():
        merged = embed_columns(packed, [queries, documents])
        assert len(forwards) == 2
        expected = [packed(packed.preprocess(columns[0], prompt="query: ")), packed(packed.preprocess(columns[1]))]
    for embeddings, output in zip(merged, expected, strict=True):
        torch.testing.assert_close(embeddings, output["sentence_embedding"])


def test_siglip_on_merged_columns_equals_its_per_column_loss(packed, columns):
    features = tokenize_columns(packed, columns[:2])
    loss = SigLIPLoss(packed)
    merged = loss(features, None)
    merged.backward()
    merged_gradients = gradients(packed)
    packed.zero_grad(set_to_none=True)
    per_column = loss.compute_loss_from_embeddings([packed(dict(f))["sentence_embedding"] for f in features], None)
    per_column.backward()
    torch.testing.assert_close(merged, per_column)
    assert_same_gradients(merged_gradients, gradients(packed))


def test_matryoshka_around_info_nce_keeps_one_forward_and_stock_gradients(packed, tiny_model_factory, columns):
    forwards = []
    packed[0].register_forward_hook(lambda module, args, output: forwards.append(1))
    info_nce = InfoNCELoss(packed, temperature=0.05, learnable_temperature=False)
    loss = MatryoshkaLoss(packed, info_nce, [32, 16, 8])(tokenize_columns(packed, columns), None)
    loss.backward()
    assert len(forwards) == 1  # ST's Matryoshka reuses the one forward for every dimension

    stock = tiny_model(tiny_model_factory("bert"))
    expected = MatryoshkaLoss(stock, MultipleNegativesRankingLoss(stock, scale=20.0), [32, 16, 8])
    expected = expected(tokenize_columns(stock, columns), None)
    expected.backward()
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)
    assert_same_gradients(gradients(packed), gradients(stock))
