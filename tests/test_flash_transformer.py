"""FlashTransformer against stock Sentence Transformers (padded SDPA) on real and tiny models."""

from __future__ import annotations

import pytest
import torch
from conftest import DECODERS, ENCODERS, NO_SDPA, TINY_MAX_SEQ_LENGTH
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Transformer
from sentence_transformers.sentence_transformer.modules import Normalize, Pooling

from st_contrast import load_model
from st_contrast.modules import (
    FlashTransformer,
    attention_backend,
    disable_packing,
    is_packed,
    resolved_attention_backend,
    set_attention_backend,
)

ALL_POOLING_MODES = ("mean", "max", "cls", "lasttoken", "weightedmean", "mean_sqrt_len_tokens")


def mixed_length_texts(sentences: list[str]) -> list[str]:
    """Empty (1 token for the BPE decoders), short, medium and truncated-to-max inputs, unsorted."""
    long = " ".join(sentences[:40])
    return ["", sentences[0], long, "a", sentences[1] + " " + sentences[2], long[::-1], sentences[3]]


def stock_implementation(path: str) -> str:
    """``sdpa``, or ``eager`` for the architectures transformers gives no SDPA path (Gemma2: logit soft-capping)."""
    from transformers import AutoConfig

    return "eager" if AutoConfig.from_pretrained(path).model_type in NO_SDPA else "sdpa"


def build_pair(path: str, pooling_mode, max_seq_length: int) -> tuple[SentenceTransformer, SentenceTransformer]:
    """(stock padded-SDPA model, FlashTransformer model) with identical weights and pooling."""
    implementation = stock_implementation(path)
    stock = Transformer(path, max_seq_length=max_seq_length, model_kwargs={"attn_implementation": implementation})
    flash = FlashTransformer(path, max_seq_length=max_seq_length, attention_backend="sdpa")
    dim = stock.get_embedding_dimension()
    models = []
    for backbone in (stock, flash):
        model = SentenceTransformer(modules=[backbone, Pooling(dim, pooling_mode=pooling_mode)], device="cpu")
        models.append(model.eval())
    return models[0], models[1]


def embed(model: SentenceTransformer, texts: list[str]) -> torch.Tensor:
    features = model.preprocess(texts)
    return model(features)["sentence_embedding"]


def contrastive_loss(model: SentenceTransformer, anchors: list[str], positives: list[str]) -> torch.Tensor:
    a = torch.nn.functional.normalize(embed(model, anchors), dim=-1)
    p = torch.nn.functional.normalize(embed(model, positives), dim=-1)
    scores = a @ p.T * 20.0
    return torch.nn.functional.cross_entropy(scores, torch.arange(len(anchors)))


def assert_gradients_match(stock: SentenceTransformer, flash: SentenceTransformer) -> None:
    stock_grads = {n: p.grad for n, p in stock[0].model.named_parameters() if p.grad is not None}
    flash_grads = {n: p.grad for n, p in flash[0].model.named_parameters() if p.grad is not None}
    assert stock_grads.keys() == flash_grads.keys() and stock_grads
    for name, grad in stock_grads.items():
        torch.testing.assert_close(flash_grads[name], grad, atol=1e-5, rtol=1e-4, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("model_type", ENCODERS + DECODERS)
def test_tiny_parity_embeddings_and_gradients(model_type, tiny_model_factory, snli_sentences):
    stock, flash = build_pair(tiny_model_factory(model_type), ALL_POOLING_MODES, TINY_MAX_SEQ_LENGTH)
    texts = mixed_length_texts(snli_sentences)

    features = flash.preprocess(texts)
    lengths = features["cu_seq_lens_q"].diff()
    assert features["input_ids"].shape[0] == 1, "FlashTransformer must feed one packed row"
    assert int(lengths.max()) == TINY_MAX_SEQ_LENGTH and int(lengths.min()) <= 2

    with torch.no_grad():
        expected, actual = embed(stock, texts), embed(flash, texts)
    assert (actual - expected).abs().max().item() < 1e-5

    anchors, positives = texts[:4], texts[3:]
    contrastive_loss(stock, anchors, positives[:4]).backward()
    contrastive_loss(flash, anchors, positives[:4]).backward()
    assert_gradients_match(stock, flash)


def test_minilm_parity_with_stock_sentence_transformer(minilm_path, snli_sentences):
    """The packaged all-MiniLM-L6-v2 as shipped (mean pooling + Normalize) against its packed twin."""
    stock = SentenceTransformer(minilm_path, device="cpu").eval()
    backbone = FlashTransformer(minilm_path, max_seq_length=stock.max_seq_length, attention_backend="sdpa")
    flash = SentenceTransformer(modules=[backbone, Pooling(384, "mean"), Normalize()], device="cpu").eval()
    texts = mixed_length_texts(snli_sentences)

    expected = stock.encode(texts, convert_to_tensor=True)
    actual = flash.encode(texts, convert_to_tensor=True)
    assert (actual - expected).abs().max().item() < 1e-5
    assert int(flash.preprocess(texts)["cu_seq_lens_q"].diff().max()) == stock.max_seq_length

    contrastive_loss(stock, texts[:4], texts[3:7]).backward()
    contrastive_loss(flash, texts[:4], texts[3:7]).backward()
    assert_gradients_match(stock, flash)


def test_roberta_positions_are_offset(tiny_model_factory):
    flash = FlashTransformer(tiny_model_factory("roberta"), max_seq_length=TINY_MAX_SEQ_LENGTH)
    features = flash.preprocess(["one two three", "four"])
    padding_idx = flash.model.config.pad_token_id
    first = features["cu_seq_lens_q"][:-1].long()
    assert features["position_ids"][0, first].tolist() == [padding_idx + 1] * 2


@pytest.mark.parametrize("model_type", ["bert", "llama"])
def test_save_writes_a_plain_model_and_load_model_packs_it_again(
    model_type, tiny_model_factory, snli_sentences, tmp_path
):
    backbone = FlashTransformer(tiny_model_factory(model_type), attention_backend="sdpa")
    assert type(backbone) is Transformer and is_packed(backbone) and isinstance(backbone, FlashTransformer)
    model = SentenceTransformer(modules=[backbone, Pooling(32, "lasttoken"), Normalize()], device="cpu")
    texts = mixed_length_texts(snli_sentences)
    before = model.encode(texts, convert_to_tensor=True)
    model.save(str(tmp_path))
    assert "st_contrast" not in (tmp_path / "modules.json").read_text()
    assert "unpad_inputs" not in (tmp_path / "sentence_bert_config.json").read_text()

    plain = SentenceTransformer(str(tmp_path), device="cpu")  # stock loading, padded, stock attention
    assert not is_packed(plain[0]) and plain[0].model.config._attn_implementation != "st_packed_exact"
    assert (plain.encode(texts, convert_to_tensor=True) - before).abs().max().item() < 1e-5

    reloaded = load_model(str(tmp_path), device="cpu", attention_backend="sdpa")
    assert isinstance(reloaded[0], FlashTransformer) and attention_backend(reloaded[0]) == "sdpa"
    assert reloaded[0].model.config._attn_implementation == "st_packed_exact"
    assert not reloaded.trust_remote_code
    torch.testing.assert_close(reloaded.encode(texts, convert_to_tensor=True), before, atol=0, rtol=0)
    assert not is_packed(load_model(str(tmp_path), device="cpu", packed=False)[0])


def test_backend_is_switchable_and_reported(tiny_model_factory):
    backbone = FlashTransformer(tiny_model_factory("bert"))
    assert attention_backend(backbone) == "auto" and resolved_attention_backend(backbone) == "block_diagonal"
    set_attention_backend(backbone, "cpu")  # the former name of the exact SDPA path
    assert attention_backend(backbone) == "sdpa"
    assert backbone.model.config._attn_implementation == "st_packed_exact"
    disable_packing(backbone)
    assert not isinstance(backbone, FlashTransformer) and backbone.model.config._attn_implementation == "sdpa"
    features = backbone.preprocess(["one two three", "four"])
    assert features["input_ids"].shape[0] == 2 and "cu_seq_lens_q" not in features


def test_unknown_backend_is_refused(tiny_model_factory):
    expected = r"Unknown attention backend 'xformers'.*'auto', 'varlen', 'flash_attn', 'sdpa'"
    with pytest.raises(ValueError, match=expected):
        FlashTransformer(tiny_model_factory("bert"), attention_backend="xformers")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal")
def test_gpu_backend_on_cpu_says_why(tiny_model_factory):
    model = SentenceTransformer(
        modules=[FlashTransformer(tiny_model_factory("bert"), attention_backend="varlen"), Pooling(32)], device="cpu"
    )
    with pytest.raises(ValueError, match="attention_backend='varlen' cannot run here.*'auto'"):
        model.encode(["hello"])


def test_unsupported_architecture_is_refused(tmp_path, minilm_path):
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    config = AutoConfig.for_model(
        "albert", hidden_size=32, num_attention_heads=2, num_hidden_layers=1, intermediate_size=64, embedding_size=16
    )
    AutoModel.from_config(config).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="model_type 'albert' is not supported packed.*packed: false"):
        FlashTransformer(str(tmp_path))


def test_padding_cannot_be_requested(tiny_model_factory):
    with pytest.raises(ValueError, match="always packs"):
        FlashTransformer(tiny_model_factory("bert"), unpad_inputs=False)


def test_padded_batch_into_packed_attention_is_refused(tiny_model_factory):
    backbone = FlashTransformer(tiny_model_factory("bert"))
    ids = torch.tensor([[2, 5, 6, 3], [2, 7, 3, 0]])
    with pytest.raises(ValueError, match="padded batch"):
        backbone.model(input_ids=ids, attention_mask=(ids != 0).long())


@pytest.mark.parametrize("model_type", ["bert", "llama"])
def test_prompt_excluded_from_pooling_matches_stock(model_type, tiny_model_factory, snli_sentences):
    """``include_prompt=False``: the packed pooling drops the same prompt tokens as the padded one."""
    path = tiny_model_factory(model_type)
    stock, flash = build_pair(path, ("mean", "weightedmean", "cls"), TINY_MAX_SEQ_LENGTH)
    for model in (stock, flash):
        model[1].include_prompt = False
    texts = mixed_length_texts(snli_sentences)[1:]
    prompt = "query: "
    expected = stock.encode(texts, prompt=prompt, convert_to_tensor=True)
    actual = flash.encode(texts, prompt=prompt, convert_to_tensor=True)
    assert (actual - expected).abs().max().item() < 1e-5
    assert not torch.allclose(actual, flash.encode(texts, convert_to_tensor=True))


def test_gradient_checkpointing_keeps_gradients(tiny_model_factory, snli_sentences):
    _, flash = build_pair(tiny_model_factory("llama"), "mean", TINY_MAX_SEQ_LENGTH)
    texts = mixed_length_texts(snli_sentences)
    contrastive_loss(flash, texts[:3], texts[3:6]).backward()
    expected = {n: p.grad.clone() for n, p in flash[0].model.named_parameters()}
    flash.zero_grad()
    backbone = flash[0].model
    getattr(backbone, "activation_checkpointing_enable", backbone.gradient_checkpointing_enable)()
    flash.train()  # checkpointing only recomputes in train mode; the tiny models have no dropout
    contrastive_loss(flash, texts[:3], texts[3:6]).backward()
    for name, parameter in flash[0].model.named_parameters():
        torch.testing.assert_close(parameter.grad, expected[name], atol=1e-6, rtol=1e-5)
