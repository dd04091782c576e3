"""Masked pretraining: MNTP for decoders and MLM for encoders, against hand-computed losses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoModelForCausalLM, TrainingArguments

from st_contrast.modules import BidirectionalTransformer, is_bidirectional, set_causal
from st_contrast.pretraining import (
    MaskingCollator,
    load_mlm_model,
    load_mntp_model,
    save_pretrained_model,
    set_mask_token,
    tokenize_texts,
    train_masked_lm,
)


@pytest.fixture(scope="module")
def full_alphabet_llama(tmp_path_factory) -> str:
    """A tiny Llama whose BPE has every byte, so LLM2Vec's "_" mask token exists (the conftest one lacks it)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    from helpers.tiny import tiny_model

    return tiny_model(tmp_path_factory.mktemp("alphabet") / "llama")


def batch_of(tokenizer, texts, collator):
    return collator([tokenizer(text, truncation=True, max_length=32) for text in texts])


def test_mntp_loss_is_shifted_cross_entropy_on_masked_positions(full_alphabet_llama, snli_sentences):
    model, tokenizer = load_mntp_model(full_alphabet_llama, mask_token="_")
    assert tokenizer.mask_token == "_" and tokenizer.mask_token_id != tokenizer.unk_token_id
    collator = MaskingCollator(tokenizer, mlm_probability=0.3, seed=0)
    originals = [tokenizer(t, truncation=True, max_length=32)["input_ids"] for t in snli_sentences[:8]]
    batch = batch_of(tokenizer, snli_sentences[:8], collator)
    masked = batch["labels"] != -100
    assert masked.sum() > 10 and not masked[:, 0].any()
    for row, ids in enumerate(originals):  # labels are the original tokens at the masked positions
        positions = masked[row].nonzero().squeeze(-1)
        assert batch["labels"][row, positions].tolist() == [ids[i] for i in positions.tolist()]
    model.eval()
    with torch.no_grad():
        output = model(**batch)
    # by hand: the token at i is predicted from the logits at i - 1, over masked positions only
    logits = output.logits[:, :-1][masked[:, 1:]]
    expected = F.cross_entropy(logits, batch["labels"][:, 1:][masked[:, 1:]])
    torch.testing.assert_close(output.loss, expected)


def test_mntp_never_selects_a_first_token_when_the_tokenizer_pads_left():
    """A decoder tokenizer without BOS that pads on the left (Qwen2-style): MNTP predicts token i from position
    i - 1, so each row's first real token must never be a label; the collator pads on the right, as LLM2Vec does."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "_": 2, **{f"w{i}": i + 3 for i in range(50)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="</s>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="</s>", pad_token="<pad>")
    tokenizer.padding_side = "left"
    set_mask_token(tokenizer, "_")
    collator = MaskingCollator(tokenizer, mlm_probability=0.99, scheme="all_mask", shifted=True, seed=0)
    batch = collator([tokenizer(" ".join(f"w{i}" for i in range(8))), tokenizer("w1 w2 w3")])
    assert batch["attention_mask"][:, 0].all()  # every row starts at position 0
    assert (batch["labels"][:, 0] == -100).all()
    assert (batch["labels"][1, 1:3] != -100).all() and (batch["labels"][1, 3:] == -100).all()  # then real tokens only
    assert tokenizer.padding_side == "left"  # the user's tokenizer is left as it was


def test_mntp_model_is_bidirectional(tiny_model_factory):
    model, tokenizer = load_mntp_model(tiny_model_factory("qwen2"), mask_token="eos")
    assert tokenizer.mask_token == tokenizer.eos_token and is_bidirectional(model)
    ids = tokenizer(["A man plays a guitar."], return_tensors="pt")["input_ids"]
    changed = ids.clone()
    changed[0, -1] = (changed[0, -1] + 3) % model.config.vocab_size
    with torch.no_grad():
        assert (model(changed).logits[0, 0] - model(ids).logits[0, 0]).abs().max() > 1e-4


@pytest.mark.parametrize("scheme", ["bert", "all_mask"])
def test_masking_scheme(scheme, tiny_model_factory, snli_sentences):
    _, tokenizer = load_mntp_model(tiny_model_factory("llama"), mask_token="<mask>")
    collator = MaskingCollator(tokenizer, mlm_probability=0.5, scheme=scheme, seed=1)
    originals = tokenize_texts(tokenizer, snli_sentences[:400], 32)
    batch = collator([dict(row) for row in originals])
    padded = collator.tokenizer.pad([dict(row) for row in originals], return_tensors="pt")["input_ids"]
    masked = batch["labels"] != -100
    special = torch.isin(padded, torch.tensor(tokenizer.all_special_ids))
    assert not (masked & special).any() and not masked[:, 0].any()
    assert 0.45 < masked.sum() / (~special[:, 1:]).sum() < 0.55
    inputs = batch["input_ids"][masked]
    as_mask = (inputs == tokenizer.mask_token_id).float().mean().item()
    unchanged = (inputs == padded[masked]).float().mean().item()
    if scheme == "all_mask":
        assert as_mask == 1.0
    else:
        assert 0.76 < as_mask < 0.84 and 0.07 < unchanged < 0.14


def test_bad_mask_token_is_refused(tiny_model_factory):
    with pytest.raises(ValueError, match="not a token of the vocabulary; use '_', 'eos', '<mask>'"):
        load_mntp_model(tiny_model_factory("llama"), mask_token="<not-a-token>")


def test_mlm_loss_is_cross_entropy_on_masked_positions(tiny_model_factory, snli_sentences):
    model, tokenizer = load_mlm_model(tiny_model_factory("bert"))
    collator = MaskingCollator(tokenizer, mlm_probability=0.3, shifted=False, seed=0)
    batch = batch_of(tokenizer, snli_sentences[:8], collator)
    masked = batch["labels"] != -100
    model.eval()
    with torch.no_grad():
        output = model(**batch)
    expected = F.cross_entropy(output.logits[masked], batch["labels"][masked])  # no shift for an encoder
    torch.testing.assert_close(output.loss, expected)


def training_args(tmp_path, steps=3):
    return TrainingArguments(
        str(tmp_path / "run"),
        max_steps=steps,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        logging_steps=1,
    )


def test_mntp_with_lora_saves_adapter_and_merged(tiny_model_factory, snli_sentences, tmp_path):
    from transformers import AutoTokenizer

    path = str(tmp_path / "base")  # a causal LM checkpoint, so its lm_head is saved (the fixture has none)
    AutoModelForCausalLM.from_pretrained(tiny_model_factory("mistral")).save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_model_factory("mistral")).save_pretrained(path)
    model, tokenizer = load_mntp_model(path, mask_token="<mask>", lora={"r": 4, "alpha": 8, "dropout": 0.0})
    dataset = tokenize_texts(tokenizer, snli_sentences[:24], 32)
    trainer = train_masked_lm(model, tokenizer, dataset, training_args(tmp_path), mlm_probability=0.2, shifted=True)
    assert trainer.state.global_step == 3
    written = save_pretrained_model(model, tokenizer, tmp_path / "mntp", mode="both")

    ids = tokenizer(snli_sentences[:3], return_tensors="pt", padding=True)
    model.eval()
    with torch.no_grad():
        expected = model(**ids).logits
        merged = AutoModelForCausalLM.from_pretrained(written["merged"]).eval()
        assert merged.config.is_causal is False
        torch.testing.assert_close(merged(**ids).logits, expected, atol=1e-5, rtol=1e-4)
        # the adapter alone, loaded onto the original base (transformers' adapter API, as Sentence Transformers does)
        adapter = AutoModelForCausalLM.from_pretrained(path)
        adapter.load_adapter(written["adapter"])
        set_causal(adapter.eval(), False)  # the adapter directory does not carry the base's settings
        torch.testing.assert_close(adapter(**ids).logits, expected, atol=1e-5, rtol=1e-4)

    # the next LLM2Vec stage loads the merged MNTP model as a bidirectional embedding backbone
    backbone = BidirectionalTransformer(written["merged"])
    reference = AutoModel.from_pretrained(written["merged"]).state_dict()
    for name, value in backbone.model.state_dict().items():
        torch.testing.assert_close(value, reference[name], atol=0, rtol=0)


def test_mlm_full_training_changes_weights_and_saves(tiny_model_factory, snli_sentences, tmp_path):
    model, tokenizer = load_mlm_model(tiny_model_factory("bert"))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    dataset = tokenize_texts(tokenizer, snli_sentences[:24], 32)
    train_masked_lm(model, tokenizer, dataset, training_args(tmp_path), mlm_probability=0.3, shifted=False)
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters())
    with pytest.raises(ValueError, match="fully trained; use 'merged'"):
        save_pretrained_model(model, tokenizer, tmp_path / "mlm", mode="adapter")
    save_pretrained_model(model, tokenizer, tmp_path / "mlm")
    assert (tmp_path / "mlm" / "config.json").is_file()
