"""LoRA presets: training moves adapter weights only; adapter models save, reload and merge exactly."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from adapter_utils import changed_parameters, embed, snapshot, train_steps
from conftest import DECODERS, ENCODERS, PADDED_DECODERS, PADDED_ENCODERS
from peft.tuners.tuners_utils import BaseTunerLayer
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Transformer
from sentence_transformers.sentence_transformer.modules import Pooling

from st_contrast import load_adapter_model, load_model, relink_adapter_base
from st_contrast.adapters import LORA_PRESETS, add_lora, linear_layer_names, merge_and_save
from st_contrast.modules import FlashTransformer
from st_contrast.modules.architectures import ARCHITECTURES

CASES = [
    ("bert", Transformer, "encoder"),
    ("bert", FlashTransformer, "encoder"),
    ("roberta", FlashTransformer, "auto"),
    ("modernbert", FlashTransformer, "auto"),
    ("llama", FlashTransformer, "decoder"),
    ("qwen2", Transformer, "auto"),
    ("nomic_bert", FlashTransformer, "auto"),
    ("gpt_neox", FlashTransformer, "gpt_neox"),
    ("gptj", Transformer, "auto"),
]


def build(path: str, backbone_class=Transformer, pooling_mode: str = "mean") -> SentenceTransformer:
    backbone = backbone_class(path)
    modules = [backbone, Pooling(backbone.get_embedding_dimension(), pooling_mode)]
    return SentenceTransformer(modules=modules, device="cpu")


def reload(path: str, backbone_class) -> SentenceTransformer:
    """Plain ST for stock modules; st_contrast.load_model where modules.json names FlashTransformer."""
    return load_model(path, device="cpu") if backbone_class is FlashTransformer else SentenceTransformer(path)


def peft_layers(model: torch.nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, BaseTunerLayer)]


@pytest.fixture
def base_copy(tmp_path, minilm_path):
    """A private copy of MiniLM, so a test can delete the base model an adapter points at."""
    return str(shutil.copytree(minilm_path, tmp_path / "base"))


@pytest.mark.parametrize(("model_type", "backbone_class", "preset"), CASES)
def test_training_changes_only_adapter_weights(model_type, backbone_class, preset, tiny_model_factory, snli_sentences):
    model = build(tiny_model_factory(model_type), backbone_class)
    base_total = sum(p.numel() for p in model.parameters())
    count = add_lora(model, preset, r=4, alpha=8)
    lora = {n: p for n, p in model.named_parameters() if ".lora_" in n}
    assert lora and count.trainable == sum(p.numel() for p in lora.values())
    assert count.total == base_total + count.trainable

    before = snapshot(model)
    train_steps(model, snli_sentences[:8], snli_sentences[8:16], steps=2)
    changed = changed_parameters(before, model)
    assert changed and changed <= lora.keys(), sorted(changed - lora.keys())
    # B starts at zero, so step 1 moves B only and step 2 moves A as well.
    assert any(".lora_A." in n for n in changed) and any(".lora_B." in n for n in changed)


@pytest.mark.parametrize("name", ENCODERS + DECODERS + PADDED_ENCODERS + PADDED_DECODERS)
def test_auto_uses_the_architecture_preset(name, tiny_model_factory):
    """Every layer name of the architecture's preset exists in the model, and "auto" adapts exactly those."""
    model = build(tiny_model_factory(name))
    backbone = model[0].model
    preset = LORA_PRESETS[ARCHITECTURES[backbone.config.model_type].lora_preset]
    assert set(preset) <= set(linear_layer_names(backbone)), (preset, linear_layer_names(backbone))
    add_lora(model, "auto", r=2, alpha=4)
    assert set(backbone.peft_config["default"].target_modules) == set(preset)


def test_overrides_reach_peft(tiny_model_factory):
    model = build(tiny_model_factory("qwen2"))
    add_lora(model, "decoder", r=2, alpha=6, dropout=0.0)
    config = model[0].model.peft_config["default"]
    assert (config.r, config.lora_alpha, config.lora_dropout) == (2, 6, 0.0)
    assert set(config.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def test_preset_matching_nothing_names_what_it_looked_for(tiny_model_factory):
    model = build(tiny_model_factory("bert"))
    with pytest.raises(ValueError, match=r"looked for .*q_proj.*linear layers are named \[.*'query'"):
        add_lora(model, "decoder")
    with pytest.raises(ValueError, match="Unknown LoRA preset 'gpt'"):
        add_lora(model, "gpt")


@pytest.mark.parametrize("backbone_class", [Transformer, FlashTransformer])
def test_adapter_save_reload_and_merge(backbone_class, base_copy, snli_sentences, tmp_path):
    texts = snli_sentences[:16]
    model = build(base_copy, backbone_class)
    add_lora(model, "encoder", r=4, alpha=8)
    train_steps(model, texts[:8], texts[8:], lr=1e-3)
    expected = embed(model, texts)
    stock = embed(SentenceTransformer(base_copy, device="cpu"), texts)
    assert not torch.allclose(expected, stock, atol=1e-4)  # the adapter changed the model

    model.save(str(tmp_path / "adapter"))
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == base_copy  # recorded as an absolute path
    assert not (tmp_path / "adapter" / "model.safetensors").exists()
    reloaded = reload(str(tmp_path / "adapter"), backbone_class)
    assert peft_layers(reloaded)
    torch.testing.assert_close(embed(reloaded, texts), expected, atol=1e-5, rtol=0)

    merge_and_save(model, tmp_path / "merged")
    assert peft_layers(model)  # merged a copy: the adapter model keeps its adapters
    shutil.rmtree(base_copy)  # the standalone model must not need the base
    assert not (tmp_path / "merged" / "adapter_config.json").exists()
    merged = reload(str(tmp_path / "merged"), backbone_class)
    assert not peft_layers(merged) and not getattr(merged[0].model, "_hf_peft_config_loaded", False)
    torch.testing.assert_close(embed(merged, texts), expected, atol=1e-5, rtol=0)


def test_merge_keeps_the_modules_a_lora_config_trains_whole(tiny_model_factory, snli_sentences, tmp_path):
    """A LoraConfig's modules_to_save train a copy of whole modules (here every LayerNorm): merging must put the
    trained copies in their place, or the saved model loads its untrained LayerNorms under unknown keys."""
    from peft import LoraConfig

    texts = snli_sentences[:16]
    model = build(tiny_model_factory("bert"))
    add_lora(model, LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], modules_to_save=["LayerNorm"]))
    train_steps(model, texts[:8], texts[8:], lr=1e-2)
    expected = embed(model, texts)
    merge_and_save(model, tmp_path / "merged")
    merged = SentenceTransformer(str(tmp_path / "merged"), device="cpu")
    assert not any("Wrapper" in type(module).__name__ for module in merged.modules())
    torch.testing.assert_close(embed(merged, texts), expected, atol=1e-5, rtol=0)


def test_missing_base_is_named_and_relinking_fixes_it(base_copy, minilm_path, snli_sentences, tmp_path):
    model = build(base_copy)
    add_lora(model, "encoder")
    train_steps(model, snli_sentences[:8], snli_sentences[8:16], lr=1e-3)
    model.save(str(tmp_path / "adapter"))
    shutil.rmtree(base_copy)
    with pytest.raises(
        FileNotFoundError, match=f"base model '{base_copy}', which no longer exists.*relink_adapter_base"
    ):
        load_model(str(tmp_path / "adapter"))

    relink_adapter_base(tmp_path / "adapter", minilm_path)  # the same weights, elsewhere
    reloaded = load_adapter_model(tmp_path / "adapter", device="cpu")
    torch.testing.assert_close(
        embed(reloaded, snli_sentences[:16]), embed(model, snli_sentences[:16]), atol=1e-5, rtol=0
    )


def test_reloaded_adapter_trains_again(minilm_path, snli_sentences, tmp_path):
    model = build(minilm_path)
    add_lora(model, "encoder")
    model.save(str(tmp_path / "adapter"))
    reloaded = load_adapter_model(tmp_path / "adapter", trainable=True, device="cpu")
    before = snapshot(reloaded)
    train_steps(reloaded, snli_sentences[:8], snli_sentences[8:16], lr=1e-3)
    changed = changed_parameters(before, reloaded)
    assert changed and all(".lora_" in name for name in changed)
