"""The architecture table: refusals say why, every decoder passes or fails the leak probe, MNTP/MLM per row."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import DECODERS, ENCODERS, PADDED_DECODERS, PADDED_ENCODERS, TINY_CONFIGS
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Transformer
from sentence_transformers.sentence_transformer.modules import Pooling

from st_contrast.attention import ATTENTION_BACKENDS, attention_implementation_name
from st_contrast.modules import (
    SUPPORTED_MODEL_TYPES,
    BidirectionalityError,
    BidirectionalTransformer,
    FlashTransformer,
    is_bidirectional,
    probe_attention,
    set_causal,
)
from st_contrast.modules.architectures import ARCHITECTURES, Architecture, support_table
from st_contrast.pretraining import MaskingCollator, load_mlm_model, load_mntp_model

README = Path(__file__).resolve().parents[1] / "README.md"
BIDIRECTIONAL_DECODERS = DECODERS + tuple(t for t in PADDED_DECODERS if ARCHITECTURES[t].bidirectional_refusal is None)
MLM_ENCODERS = tuple(
    name
    for name in ENCODERS + PADDED_ENCODERS
    if ARCHITECTURES[TINY_CONFIGS[name].get("model_type", name)].family == "encoder"
)


def model_type(name: str) -> str:
    return TINY_CONFIGS[name].get("model_type", name)


MLM_ENCODERS = tuple(name for name in ENCODERS + PADDED_ENCODERS if ARCHITECTURES[model_type(name)].family == "encoder")


def test_readme_table_is_the_architecture_table():
    assert support_table() in README.read_text(encoding="utf8"), "README's table differs: paste support_table()"


def test_every_table_row_is_tested():
    """Each architecture of the table has a tiny config here, in the list matching its packed support."""
    packed = {model_type(name) for name in ENCODERS + DECODERS}
    padded = {model_type(name) for name in PADDED_ENCODERS + PADDED_DECODERS}
    assert packed == set(SUPPORTED_MODEL_TYPES)
    assert packed | padded == set(ARCHITECTURES) and not packed & padded


@pytest.mark.parametrize("name", PADDED_ENCODERS + PADDED_DECODERS)
def test_refused_architectures_say_why_and_run_padded(name, tiny_model_factory):
    path = tiny_model_factory(name)
    reason = ARCHITECTURES[model_type(name)].packed_refusal
    with pytest.raises(ValueError, match=f"cannot run packed: {reason[:30]}.*packed: false.*packed=False"):
        FlashTransformer(path)
    stock = Transformer(path, model_kwargs={"attn_implementation": "eager"})
    model = SentenceTransformer(modules=[stock, Pooling(stock.get_embedding_dimension())], device="cpu")
    assert model.encode(["A man plays a guitar.", "Hi"], convert_to_tensor=True).isfinite().all()


@pytest.mark.parametrize("name", BIDIRECTIONAL_DECODERS)
def test_leak_probe_on_every_bidirectional_decoder(name, tiny_model_factory):
    """Built bidirectional: the first token sees a later one, sequences stay apart; the causal control does not."""
    backbone = BidirectionalTransformer(tiny_model_factory(name), model_kwargs={"attn_implementation": "eager"})
    assert is_bidirectional(backbone)
    probe = probe_attention(backbone.model)
    assert probe.sees_ahead and probe.stays_within_sequences, probe
    set_causal(backbone, True)
    assert not probe_attention(backbone.model).sees_ahead


@pytest.mark.parametrize("name", ["gpt_neox", "gptj", "bloom"])
def test_new_decoders_reload_bidirectional_in_plain_sentence_transformers(name, tiny_model_factory, tmp_path):
    """config.json's is_causal: false is all a plain reload needs (transformers builds the masks from it)."""
    stock = set_causal(Transformer(tiny_model_factory(name), model_kwargs={"attn_implementation": "eager"}), False)
    SentenceTransformer(modules=[stock, Pooling(32)], device="cpu").save(str(tmp_path))
    reloaded = SentenceTransformer(str(tmp_path), device="cpu", model_kwargs={"attn_implementation": "eager"})
    probe = probe_attention(reloaded[0].model)
    assert probe.sees_ahead and probe.stays_within_sequences, probe


def test_gpt_neo_is_refused_at_construction(tiny_model_factory):
    with pytest.raises(BidirectionalityError, match="GPTNeoModel \\(model_type 'gpt_neo'\\) cannot be made bidir"):
        BidirectionalTransformer(tiny_model_factory("gpt_neo"))
    causal = BidirectionalTransformer(tiny_model_factory("gpt_neo"), bidirectional=False)  # SGPT-style: fine
    assert not is_bidirectional(causal)


def test_the_leak_probe_catches_an_untested_causal_architecture(tiny_model_factory, monkeypatch):
    """Without its table entry GPT-Neo is an untested architecture: the probe finds it causal and refuses it."""
    entry = ARCHITECTURES["gpt_neo"]
    untested = Architecture(entry.name, entry.family, entry.lora_preset, packed_refusal=entry.packed_refusal)
    monkeypatch.setitem(ARCHITECTURES, "gpt_neo", untested)
    with pytest.raises(BidirectionalityError, match="GPTNeoModel .*'gpt_neo'.* stays causal .*leak probe"):
        BidirectionalTransformer(tiny_model_factory("gpt_neo"))
    model = Transformer(tiny_model_factory("gpt_neo"))
    with pytest.raises(BidirectionalityError, match="stays causal"):
        set_causal(model, False)
    assert getattr(model.model.config, "is_causal", True) and not is_bidirectional(model)  # set back, not half-changed


def test_probe_of_a_packed_gpu_backend_runs_anywhere(tiny_model_factory):
    """A module packed for a GPU kernel is set up (and probed, with the exact kernel) on a CPU machine."""
    module = set_causal(FlashTransformer(tiny_model_factory("gpt_neox"), attention_backend="varlen"), False)
    assert is_bidirectional(module) and module.model.config._attn_implementation == "st_packed_varlen"


@pytest.mark.parametrize("backend", ATTENTION_BACKENDS)
@pytest.mark.parametrize("model_type", ["bert", "gpt_neox"])
def test_every_attention_backend_builds_a_packed_module_anywhere(tiny_model_factory, model_type, backend):
    """transformers reads "sdpa" and "flash" in an attention implementation's name as requests for its own kernels
    (it tries to import a flash-attention kernel from the hub): no backend's registered name may trip that."""
    module = FlashTransformer(tiny_model_factory(model_type), attention_backend=backend)
    assert module.model.config._attn_implementation == attention_implementation_name(backend)


def test_rotary_attention_under_autocast_runs_in_the_autocast_dtype(tiny_model_factory, snli_sentences, monkeypatch):
    """Mixed precision (fp32 weights, autocast): rotary embeddings promote q and k to fp32 while v is bf16. The
    kernel must get one dtype, the autocast one, as transformers' flash-attention path casts, or no GPU kernel could
    run; the embeddings stay those of stock padded SDPA under the same autocast."""
    from st_contrast.attention import interface

    seen = []
    resolve = interface.resolve_backend
    monkeypatch.setattr(
        interface,
        "resolve_backend",
        lambda name, device, dtype, **kw: seen.append(dtype) or resolve(name, device, dtype, **kw),
    )
    path = tiny_model_factory("llama")
    packed = SentenceTransformer(modules=[FlashTransformer(path), Pooling(32, "lasttoken")], device="cpu")
    stock = SentenceTransformer(modules=[Transformer(path), Pooling(32, "lasttoken")], device="cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = stock.encode(snli_sentences[:6], convert_to_tensor=True)
        actual = packed.encode(snli_sentences[:6], convert_to_tensor=True)
    assert seen and set(seen) == {torch.bfloat16}
    torch.testing.assert_close(actual.float(), expected.float(), atol=0.05, rtol=0.05)


def test_probe_runs_when_a_saved_module_loads(tiny_model_factory, tmp_path, monkeypatch):
    import st_contrast.modules.bidirectional as bidirectional

    backbone = BidirectionalTransformer(tiny_model_factory("gpt_neox"))
    SentenceTransformer(modules=[backbone, Pooling(32)], device="cpu").save(str(tmp_path))
    calls = []
    original = bidirectional.check_bidirectional
    monkeypatch.setattr(bidirectional, "check_bidirectional", lambda model: calls.append(model) or original(model))
    from st_contrast import load_model

    reloaded = load_model(str(tmp_path), device="cpu", packed=False)
    assert len(calls) == 1 and is_bidirectional(reloaded)


@pytest.mark.parametrize("name", BIDIRECTIONAL_DECODERS)
def test_mntp_on_every_bidirectional_decoder(name, tiny_model_factory, snli_sentences):
    model, tokenizer = load_mntp_model(tiny_model_factory(name), mask_token="<mask>")
    assert is_bidirectional(model)
    batch = MaskingCollator(tokenizer, mlm_probability=0.3, seed=0)([tokenizer(t) for t in snli_sentences[:4]])
    loss = model(**batch).loss
    assert torch.isfinite(loss) and loss > 0


@pytest.mark.parametrize("name", MLM_ENCODERS)
def test_mlm_on_every_encoder(name, tiny_model_factory, snli_sentences):
    model, tokenizer = load_mlm_model(tiny_model_factory(name))
    collator = MaskingCollator(tokenizer, mlm_probability=0.3, shifted=False, seed=0)
    loss = model(**collator([tokenizer(t) for t in snli_sentences[:4]])).loss
    assert torch.isfinite(loss) and loss > 0
