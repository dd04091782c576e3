"""Encoder MLM pretraining runs packed with the loss and gradients of the padded path."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer, TrainingArguments

from st_contrast.pretraining import (
    MaskingCollator,
    is_packed_model,
    load_mlm_model,
    packed_position_offset,
    save_pretrained_model,
    tokenize_texts,
    train_masked_lm,
)


@pytest.fixture(scope="module")
def mlm_checkpoints(tiny_model_factory, tmp_path_factory):
    """``name -> path`` of full masked-LM checkpoints (the tiny models have no MLM head saved)."""
    paths = {}
    for name in ("bert", "roberta", "nomic_bert", "modernbert"):
        path = tmp_path_factory.mktemp(f"mlm-{name}")
        torch.manual_seed(0)
        AutoModelForMaskedLM.from_pretrained(tiny_model_factory(name)).save_pretrained(path)
        AutoTokenizer.from_pretrained(tiny_model_factory(name)).save_pretrained(path)
        paths[name] = str(path)
    return paths


def texts_of(sentences: list[str]) -> list[str]:
    return ["", sentences[0], " ".join(sentences[:40]), "a", sentences[1], sentences[2] + " " + sentences[3]]


@pytest.mark.parametrize("name", ["bert", "roberta", "nomic_bert", "modernbert"])
def test_packed_mlm_loss_and_gradients_equal_padded(name, mlm_checkpoints, snli_sentences):
    padded, tokenizer = load_mlm_model(mlm_checkpoints[name], model_kwargs={"attn_implementation": "sdpa"})
    packed, _ = load_mlm_model(mlm_checkpoints[name], packed=True, attention_backend="sdpa")
    assert is_packed_model(packed) and not is_packed_model(padded)
    offset = packed_position_offset(packed)
    assert offset == (tokenizer.pad_token_id + 1 if name == "roberta" else 0)
    features = [tokenizer(text, truncation=True, max_length=48) for text in texts_of(snli_sentences)]
    padded_batch = MaskingCollator(tokenizer, mlm_probability=0.3, shifted=False, seed=3)(features)
    packed_batch = MaskingCollator(
        tokenizer, mlm_probability=0.3, shifted=False, seed=3, packed=True, position_offset=offset
    )(features)
    real = padded_batch["attention_mask"].bool()
    assert packed_batch["input_ids"].shape == (1, int(real.sum()))
    assert torch.equal(packed_batch["labels"][0], padded_batch["labels"][real])  # the same tokens are masked
    assert (padded_batch["labels"] != -100).sum() > 10

    for model in (padded, packed):
        model.eval()
    padded_loss = padded(**padded_batch).loss
    packed_loss = packed(**packed_batch).loss
    assert abs(packed_loss.item() - padded_loss.item()) < 1e-5
    padded_loss.backward()
    packed_loss.backward()
    grads = {n: p.grad for n, p in packed.named_parameters() if p.grad is not None}
    for n, p in padded.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(grads[n], p.grad, atol=1e-5, rtol=1e-4, msg=lambda m, n=n: f"{n}: {m}")


def test_packed_mlm_trains_and_saves_a_plain_model(mlm_checkpoints, snli_sentences, tmp_path):
    model, tokenizer = load_mlm_model(mlm_checkpoints["roberta"], packed=True, attention_backend="sdpa")
    dataset = tokenize_texts(tokenizer, snli_sentences[:24], 32)
    args = TrainingArguments(
        str(tmp_path / "run"), max_steps=3, per_device_train_batch_size=8, learning_rate=1e-3, report_to=[],
        save_strategy="no", use_cpu=True, logging_steps=1,
    )  # fmt: skip
    trainer = train_masked_lm(model, tokenizer, dataset, args, mlm_probability=0.3, shifted=False)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 3 and all(loss > 0 for loss in losses)
    save_pretrained_model(model, tokenizer, tmp_path / "mlm")
    assert "st_packed" not in (tmp_path / "mlm" / "config.json").read_text()

    plain = AutoModelForMaskedLM.from_pretrained(tmp_path / "mlm").eval()  # padded, stock attention
    batch = tokenizer(snli_sentences[:3], padding=True, return_tensors="pt")
    packed_batch = MaskingCollator(
        tokenizer, mlm_probability=0.0, shifted=False, packed=True, position_offset=packed_position_offset(model)
    )([tokenizer(text) for text in snli_sentences[:3]])
    model.eval()
    with torch.no_grad():
        expected = plain(**batch).logits[batch["attention_mask"].bool()]
        actual = model(**{k: v for k, v in packed_batch.items() if k != "labels"}).logits[0]
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-4)
    assert json.loads((tmp_path / "mlm" / "config.json").read_text())["model_type"] == "roberta"


def test_refusals(tiny_model_factory):
    with pytest.raises(ValueError, match="cannot run packed: DeBERTa.*packed=False"):
        load_mlm_model(tiny_model_factory("deberta-v2"), packed=True)
    _, tokenizer = load_mlm_model(tiny_model_factory("bert"))
    with pytest.raises(ValueError, match="packed=True is for MLM"):
        MaskingCollator(tokenizer, shifted=True, packed=True)
