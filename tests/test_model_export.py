"""export_model / st-contrast export: plain Sentence Transformers models with the source model's embeddings."""

from __future__ import annotations

import json
import math

import pytest
import torch
from llm2vec_helpers import leak_probe
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Transformer
from sentence_transformers.sentence_transformer.modules import Normalize, Pooling

import st_contrast
from st_contrast.adapters import add_lora
from st_contrast.cli import main
from st_contrast.modules import BidirectionalTransformer, InstructionPooling, LogitScale

TEXTS = [
    "A man plays a guitar.",
    "x",
    "Two dogs are running through the grass near a lake at noon while children watch them from a bench.",
]


def module_types(model_dir) -> list[str]:
    return [entry["type"] for entry in json.loads((model_dir / "modules.json").read_text())]


def legacy_model_dir(path: str, tmp_path):
    """A model as st_contrast 0.1 saved it: modules.json names FlashTransformer and a LogitScale module."""
    model = SentenceTransformer(modules=[Transformer(path), Pooling(32, "mean"), Normalize()], device="cpu")
    scale = LogitScale(temperature=0.05)
    with torch.no_grad():
        scale.logit_scale.fill_(math.log(40.0))
    model.append(scale)
    expected = model.encode(TEXTS, convert_to_tensor=True)
    out = tmp_path / "legacy"
    model.save(str(out))
    modules = json.loads((out / "modules.json").read_text())
    modules[0]["type"] = "st_contrast.modules.flash_transformer.FlashTransformer"
    (out / "modules.json").write_text(json.dumps(modules))
    config = json.loads((out / "sentence_bert_config.json").read_text())
    (out / "sentence_bert_config.json").write_text(
        json.dumps({**config, "attention_backend": "cpu", "unpad_inputs": True})
    )
    return out, expected


def test_legacy_models_load_packed_and_export_plain(tiny_model_factory, tmp_path):
    legacy, expected = legacy_model_dir(tiny_model_factory("bert"), tmp_path)
    loaded = st_contrast.load_model(str(legacy), device="cpu")
    assert isinstance(loaded[0], st_contrast.FlashTransformer) and type(loaded[0]) is Transformer
    torch.testing.assert_close(loaded.encode(TEXTS, convert_to_tensor=True), expected, atol=1e-5, rtol=0)

    report = st_contrast.export_model(str(legacy), tmp_path / "plain")
    assert report.plain and report.notes == [] and report.max_abs_diff < 1e-5
    assert all(kind.startswith("sentence_transformers.") for kind in module_types(tmp_path / "plain"))
    assert "attention_backend" not in (tmp_path / "plain" / "sentence_bert_config.json").read_text()
    plain = SentenceTransformer(str(tmp_path / "plain"), device="cpu")
    assert len(plain) == 3  # the LogitScale module is gone
    torch.testing.assert_close(plain.encode(TEXTS, convert_to_tensor=True), expected, atol=1e-5, rtol=0)


def test_export_cli_prints_the_report(tiny_model_factory, tmp_path, capsys):
    legacy, _ = legacy_model_dir(tiny_model_factory("bert"), tmp_path)
    assert main(["export", str(legacy), str(tmp_path / "out")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["plain"] is True and report["max_abs_diff"] < 1e-5


def llm2vec_model(path: str, **backbone_kwargs) -> SentenceTransformer:
    backbone = BidirectionalTransformer(path, max_seq_length=12, **backbone_kwargs)
    return SentenceTransformer(modules=[backbone, InstructionPooling(32, "lasttoken")], device="cpu").eval()


def test_bidirectional_eos_model_exports_to_a_stock_transformer(tiny_model_factory, tmp_path):
    """Bidirectional attention goes to config.json, EOS-after-truncation into the saved tokenizer."""
    model = llm2vec_model(tiny_model_factory("llama"))
    report = st_contrast.export_model(model, tmp_path / "plain", texts=TEXTS)
    assert report.plain, report.notes
    assert module_types(tmp_path / "plain") == [
        "sentence_transformers.base.modules.transformer.Transformer",
        "sentence_transformers.sentence_transformer.modules.pooling.Pooling",
    ]
    assert isinstance(model[0], BidirectionalTransformer), "the source model must not change"

    plain = SentenceTransformer(str(tmp_path / "plain"), device="cpu").eval()
    tokenizer = plain[0].tokenizer
    ids = plain.preprocess(TEXTS)["input_ids"]
    eos_rows = (ids == tokenizer.eos_token_id).any(dim=1)
    assert eos_rows.all() and ids.shape[1] == 12  # EOS on every row, also the truncated one
    expected = model.encode(TEXTS, convert_to_tensor=True)
    torch.testing.assert_close(plain.encode(TEXTS, convert_to_tensor=True), expected, atol=1e-5, rtol=0)
    # plain transformers reads bidirectionality from config.json (its attention modules keep is_causal=True)
    assert plain[0].model.config.is_causal is False and leak_probe(plain[0], TEXTS[:2])["first"] > 1e-4


def test_a_chat_tokenizer_without_a_pad_token_exports_to_a_plain_model(tiny_model_factory, tmp_path):
    """Instruct decoders' tokenizers have a chat template (Sentence Transformers then renders texts as messages) and
    often no pad token: the exported stock Transformer must still tokenize plain text and pad batches."""
    import shutil

    from transformers import AutoTokenizer

    path = tmp_path / "chat"
    shutil.copytree(tiny_model_factory("llama"), path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    tokenizer.pad_token = None
    tokenizer.save_pretrained(path)
    model = llm2vec_model(str(path))
    expected = model.encode(TEXTS, convert_to_tensor=True)
    report = st_contrast.export_model(model, tmp_path / "plain", texts=TEXTS)
    assert report.plain and report.max_abs_diff < 1e-5, report
    plain = SentenceTransformer(str(tmp_path / "plain"), device="cpu").eval()
    torch.testing.assert_close(plain.encode(TEXTS, convert_to_tensor=True), expected, atol=1e-5, rtol=0)


def test_an_instruction_boundary_plain_st_would_count_differently_keeps_its_pooling(tiny_model_factory, tmp_path):
    # ST counts a prompt's tokens alone; with a trailing space a byte-level BPE tokenizer merges it into the text's
    # first word, so the instruction boundary differs and the exact pooling must stay.
    prompted = llm2vec_model(tiny_model_factory("qwen2"))
    prompted.prompts = {"query": "Find: "}
    report = st_contrast.export_model(prompted, tmp_path / "prompted", texts=TEXTS)
    assert not report.plain and "InstructionPooling kept" in " ".join(report.notes)
    assert module_types(tmp_path / "prompted")[0].startswith("sentence_transformers.")


def test_lora_is_merged_into_a_standalone_export(tiny_model_factory, tmp_path):
    model = SentenceTransformer(modules=[Transformer(tiny_model_factory("bert")), Pooling(32)], device="cpu")
    add_lora(model, "encoder", r=4, alpha=8)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.05)  # B starts at zero: make the adapter matter
    report = st_contrast.export_model(model, tmp_path / "merged", texts=TEXTS)
    assert report.plain and report.max_abs_diff < 1e-5
    assert not (tmp_path / "merged" / "adapter_config.json").exists()
    assert any(".lora_" in name for name, _ in model.named_parameters()), "the source keeps its adapters"


def test_a_bidirectional_model_with_unmerged_adapters_keeps_its_class(tiny_model_factory, tmp_path):
    """Unmerged adapters are saved without config.json, where a stock Transformer would read is_causal: false: the
    export keeps the BidirectionalTransformer (not plain, with the reason) and its embeddings instead of failing."""
    model = llm2vec_model(tiny_model_factory("llama"))
    add_lora(model, "decoder", r=4, alpha=8)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.05)
    report = st_contrast.export_model(model, tmp_path / "adapter", texts=TEXTS, merge_adapters=False)
    assert not report.plain and "merge_adapters=True" in " ".join(report.notes)
    assert report.max_abs_diff < 1e-5
    assert (tmp_path / "adapter" / "adapter_config.json").exists()


def test_verification_catches_a_wrong_export(tiny_model_factory, tmp_path, monkeypatch):
    """The check is real: an export whose weights were altered is refused with the difference."""
    model = SentenceTransformer(modules=[Transformer(tiny_model_factory("bert")), Pooling(32)], device="cpu")
    original_save = SentenceTransformer.save

    def corrupting_save(self, path, *args, **kwargs):
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.add_(0.1 * torch.randn_like(parameter))
        return original_save(self, path, *args, **kwargs)

    monkeypatch.setattr(SentenceTransformer, "save", corrupting_save)
    with pytest.raises(ValueError, match="embeddings up to .* away from the source"):
        st_contrast.export_model(model, tmp_path / "bad", texts=TEXTS)


def test_mean_instruction_pooling_exports_with_a_note_on_unchecked_prompts(tiny_model_factory, tmp_path):
    """Pooling(include_prompt=False) is exact for the prompts checked at export; the report says the others are not."""
    backbone = BidirectionalTransformer(tiny_model_factory("llama"), max_seq_length=12)
    model = SentenceTransformer(modules=[backbone, InstructionPooling(32, "mean")], device="cpu").eval()
    model.prompts = {"query": "Query:"}
    report = st_contrast.export_model(model, tmp_path / "plain", texts=TEXTS)
    assert report.plain and report.max_abs_diff < 1e-5
    assert "checked exact for the model's prompts ['Query:']" in " ".join(report.notes)


def test_a_mean_pooled_prompt_plain_st_would_count_differently_is_refused_before_writing(tiny_model_factory, tmp_path):
    """The exact boundary of a mean-pooled instruction needs BidirectionalTransformer's instruction_mask; when plain
    Sentence Transformers would count the prompt differently, no plain export can be exact: refused, nothing written."""
    model = llm2vec_model(tiny_model_factory("qwen2"))
    model[1] = InstructionPooling(32, "mean")
    model.prompts = {"query": "Find: "}
    with pytest.raises(ValueError, match="cannot make this model plain.*Nothing was written"):
        st_contrast.export_model(model, tmp_path / "plain", texts=TEXTS)
    assert not (tmp_path / "plain").exists()
