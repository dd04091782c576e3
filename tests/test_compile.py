"""``torch.compile`` of packed backbones: one compile for every batch shape, same outputs and gradients as eager."""

from __future__ import annotations

import pytest
import torch
from compile_helpers import RecordingBackend, packed_bert, training_step
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Transformer
from sentence_transformers.sentence_transformer.modules import Pooling
from varlen_on_cpu import varlen_kernels_on_cpu

from st_contrast.modules import (
    BidirectionalFlashTransformer,
    FlashTransformer,
    compile_backbone,
    disable_packing,
    is_bidirectional,
    is_compiled,
)
from st_contrast.recipes import llm2vec_model
from st_contrast.training.builders import build_model, compile_model
from st_contrast.training.specs import ConfigError, ModelSpec

pytestmark = pytest.mark.usefixtures("fresh_compiler")


def packed_model(path: str, compile=False) -> SentenceTransformer:
    torch.manual_seed(0)
    backbone = FlashTransformer(path, attention_backend="sdpa", compile=compile)
    return SentenceTransformer(modules=[backbone, Pooling(32, "mean")], device="cpu")


def batches(sentences: list[str]) -> list[list[str]]:
    """Batches whose total tokens, number of texts and longest text all differ (a 1-token-text batch too)."""
    return [sentences[:5], sentences[10:17] + [" ".join(sentences[:9])], ["", *sentences[20:23]], sentences[30:41]]


def test_one_compile_serves_every_packed_batch_shape(tiny_model_factory, snli_sentences, tmp_path):
    recorder = RecordingBackend()  # torch.compile's custom-backend API: called once per new graph
    path = tiny_model_factory("bert")
    eager, compiled = packed_model(path), packed_model(path, compile={"backend": recorder})
    assert is_compiled(compiled[0]) and not is_compiled(eager[0])
    first, *others = batches(snli_sentences)
    for model in (eager, compiled):
        model.train()
    torch.testing.assert_close(training_step(compiled, first), training_step(eager, first), atol=1e-5, rtol=1e-5)
    after_first_batch = len(recorder.graphs)
    assert after_first_batch == 1, "the packed model broke into several graphs (the exact kernel is traced on CPU)"
    for texts in others:
        torch.testing.assert_close(training_step(compiled, texts), training_step(eager, texts), atol=1e-5, rtol=1e-5)
    assert len(recorder.graphs) == after_first_batch, "a new batch shape recompiled the packed model"
    first_encode, second_encode = batches(snli_sentences)[1], snli_sentences[50:53]
    torch.testing.assert_close(compiled.encode(first_encode), eager.encode(first_encode), atol=1e-5, rtol=1e-5)
    after_encode = len(recorder.graphs)  # encode (inference mode) compiles once more, then serves every shape too
    torch.testing.assert_close(compiled.encode(second_encode), eager.encode(second_encode), atol=1e-5, rtol=1e-5)
    assert len(recorder.graphs) == after_encode

    compiled.save(str(tmp_path / "saved"))  # compiling is not saved: a plain model with the same weights
    assert "st_contrast" not in (tmp_path / "saved" / "modules.json").read_text()
    assert not any(key.startswith("_orig_mod") for key in compiled.state_dict())
    plain = SentenceTransformer(str(tmp_path / "saved"), device="cpu")
    texts = batches(snli_sentences)[1]
    torch.testing.assert_close(plain.encode(texts), eager.encode(texts), atol=1e-5, rtol=1e-5)
    disable_packing(compiled[0])
    assert not is_compiled(compiled[0])


def test_bidirectional_decoder_compiles_to_one_graph_and_stays_bidirectional(tiny_model_factory, snli_sentences):
    recorder = RecordingBackend()

    def model(compile):
        torch.manual_seed(0)
        backbone = BidirectionalFlashTransformer(tiny_model_factory("llama"), attention_backend="sdpa", compile=compile)
        return SentenceTransformer(
            modules=[backbone, Pooling(backbone.get_embedding_dimension(), "mean")], device="cpu"
        )

    eager, compiled = model(False), model({"backend": recorder})
    assert is_compiled(compiled[0]) and is_bidirectional(compiled[0].model)
    for texts in batches(snli_sentences)[:3]:
        torch.testing.assert_close(training_step(compiled, texts), training_step(eager, texts), atol=1e-5, rtol=1e-5)
    assert len(recorder.graphs) == 1
    # bidirectional under compile too: the first token's output depends on a later token
    first, changed = compiled[0].preprocess(["a man plays a guitar"]), compiled[0].preprocess(["a man plays a drum"])
    with torch.no_grad():
        outputs = [compiled[0](features)["token_embeddings"].flatten(0, -2)[0] for features in (first, changed)]
    assert not torch.allclose(*outputs)


def test_varlen_kernel_is_traced_into_one_graph(tiny_model_factory, snli_sentences, monkeypatch, caplog):
    """The GPU kernel (torch's ``varlen_attn`` custom op, run here by CPU test kernels) is traced: the whole backbone is
    one graph (``fullgraph=True`` refuses any break) for every batch shape, with the eager exact kernel's embeddings and
    gradients. The model's attention dropout, which ``varlen`` leaves out, is still reported once, after the graph."""
    recorder = RecordingBackend()
    path = tiny_model_factory("bert")
    with varlen_kernels_on_cpu(monkeypatch), caplog.at_level("WARNING", logger="st_contrast.attention.backends"):
        eager = packed_bert(path, "sdpa")
        compiled = packed_bert(path, "varlen", {"backend": recorder, "fullgraph": True}, attention_dropout=0.1)
        for texts in batches(snli_sentences):
            expected = training_step(eager, texts)
            torch.testing.assert_close(training_step(compiled, texts), expected, atol=1e-5, rtol=1e-5)
    assert len(recorder.graphs) == 1, "a new batch shape recompiled the packed model"
    assert "torch.ops.torch_attn._varlen_attn" in recorder.graphs[0].code
    dropout_warnings = [record for record in caplog.records if "no attention dropout" in record.getMessage()]
    assert len(dropout_warnings) == 1


@pytest.mark.parametrize("model_type", ["bert", "qwen2"])  # bidirectional; causal with grouped key-value heads
def test_block_diagonal_kernel_is_traced_with_its_layout_handed_in(model_type, tiny_model_factory, snli_sentences):
    """``auto`` runs ``block_diagonal`` on CPU, which places the sequences in shared rows on the host. Compiled, the
    layout is worked out before the graph and handed in, so the kernel is traced: one graph (``fullgraph=True``) over
    batches of different row counts and widths, with the eager embeddings and gradients. Bucketed shapes go without
    the layout: there the kernel runs between the compiled graphs (and still gives the same results)."""
    path = tiny_model_factory(model_type)
    eager = packed_bert(path, "auto")
    traced, broken = RecordingBackend(), RecordingBackend()
    whole = packed_bert(path, "auto", {"backend": traced, "fullgraph": True})
    split = packed_bert(path, "block_diagonal", {"backend": broken, "bucket_shapes": True})
    for texts in batches(snli_sentences):
        expected = training_step(eager, texts)
        for compiled in (whole, split):
            torch.testing.assert_close(training_step(compiled, texts), expected, atol=1e-5, rtol=1e-5)
    assert len(traced.graphs) == 1, "a new batch shape recompiled the packed model"
    assert "scaled_dot_product_attention" in traced.graphs[0].code
    assert "shared_rows_segment" in traced.graphs[0].code
    assert len(broken.graphs) > 1 and not any("scaled_dot_product_attention" in g.code for g in broken.graphs)


def test_compiled_model_with_a_kernel_it_cannot_run_raises_the_plain_error(tiny_model_factory):
    """An explicit backend that cannot run on these tensors (``varlen`` on CPU) is refused with the same ValueError
    compiled as eager, not a compiler-internal error."""
    for compile in (False, {"backend": "eager"}):
        backbone = FlashTransformer(tiny_model_factory("bert"), attention_backend="varlen", compile=compile)
        model = SentenceTransformer(modules=[backbone, Pooling(32, "mean")], device="cpu")
        with pytest.raises(ValueError, match="attention_backend='varlen' cannot run here"):
            model.encode(["a man plays a guitar"])


def test_llm2vec_recipe_compiles_after_its_lora_adapter(tiny_model_factory, snli_sentences):
    path = tiny_model_factory("llama")
    with pytest.raises(ValueError, match="packed=True"):
        llm2vec_model(path, compile=True)
    lora = {"r": 4, "alpha": 8, "dropout": 0.0}  # no random masks: the two models must agree exactly
    torch.manual_seed(0)
    eager = llm2vec_model(path, packed=True, attention_backend="sdpa", lora=lora, device="cpu")
    torch.manual_seed(0)
    compiled = llm2vec_model(
        path, packed=True, attention_backend="sdpa", lora=lora, device="cpu", compile={"backend": "eager"}
    )
    assert is_compiled(compiled[0]) and any("lora_" in name for name, _ in compiled.named_parameters())
    for texts in batches(snli_sentences)[:2]:
        torch.testing.assert_close(training_step(compiled, texts), training_step(eager, texts), atol=1e-5, rtol=1e-5)


def test_compile_needs_a_packed_backbone(tiny_model_factory):
    with pytest.raises(ValueError, match="pack the module first"):
        compile_backbone(Transformer(tiny_model_factory("bert")))
    with pytest.raises(ConfigError, match="model.compile"):
        ModelSpec.from_dict({"name_or_path": "minilm", "packed": False, "compile": True})
    assert ModelSpec.from_dict({"name_or_path": "minilm", "compile": True}).compile is True
    arguments = {"mode": "reduce-overhead", "bucket_shapes": True}  # CUDA graphs, from a config
    assert ModelSpec.from_dict({"name_or_path": "minilm", "compile": arguments}).compile == arguments
    with pytest.raises(ConfigError, match=r"unknown argument\(s\) \['modes'\]"):
        ModelSpec.from_dict({"name_or_path": "minilm", "compile": {"modes": "reduce-overhead"}})


def test_config_compile_mapping_reaches_the_compiler(tiny_model_factory, snli_sentences):
    """``model.compile: {...}`` in a config: its ``torch.compile`` arguments and ``bucket_shapes`` are applied."""
    recorder = RecordingBackend()
    spec = {
        "name_or_path": tiny_model_factory("bert"),
        "attention_backend": "sdpa",
        "compile": {"backend": recorder, "dynamic": False, "bucket_shapes": True},
    }
    model = build_model(spec)
    compile_model(model, ModelSpec.from_dict(spec))
    eager = build_model({**spec, "compile": False})
    texts = snli_sentences[:4]
    torch.testing.assert_close(model.encode(texts), eager.encode(texts), atol=1e-5, rtol=1e-5)
    assert recorder.token_counts and all(count % 64 == 0 for count in recorder.token_counts)


@pytest.mark.slow
def test_inductor_compiled_training_matches_eager(tiny_model_factory, snli_sentences):
    """The real compiler (CPU inductor), switched on as ``model.compile: true`` in a config: embeddings and gradients
    equal eager's on batches of changing shapes, with dropout on. On CPU the compiled model draws its dropout masks
    with torch's own kernels, so under the same seed they are eager's masks (inductor's generator would draw others)."""
    dropout = {"hidden_dropout_prob": 0.2, "attention_probs_dropout_prob": 0.2}
    spec = {
        "name_or_path": tiny_model_factory("bert"),
        "attention_backend": "sdpa",
        "compile": True,
        "config_kwargs": dropout,
    }
    eager, compiled = build_model(spec), build_model(spec)  # st-contrast train compiles after the adapters
    compile_model(compiled, ModelSpec.from_dict(spec))
    assert is_compiled(compiled[0]) and not is_compiled(eager[0])
    assert eager[0].model.config.attention_probs_dropout_prob == 0.2
    for model in (eager, compiled):
        model.train()

    def seeded_step(model, texts, seed):
        torch.manual_seed(seed)
        return training_step(model, texts)

    for seed, texts in enumerate(batches(snli_sentences)[:3]):
        expected = seeded_step(eager, texts, seed)
        torch.testing.assert_close(seeded_step(compiled, texts, seed), expected, atol=1e-5, rtol=1e-4)
    other_masks = seeded_step(eager, texts, seed + 1)  # the masks are drawn: another seed, other embeddings
    assert not torch.allclose(other_masks[0], expected[0], atol=1e-3)


def test_cpu_compile_options_draw_dropout_masks_with_torch_kernels():
    """On CPU inductor gets ``fallback_random`` (a mode is spelled out as its options, which ``torch.compile`` takes
    instead of a mode); an explicit setting, other devices and other backends are left alone."""
    from st_contrast.modules.compilation import _device_compile_options

    cpu = _device_compile_options({"dynamic": True}, "cpu")
    assert cpu == {"dynamic": True, "options": {"fallback_random": True}}
    with_mode = _device_compile_options({"dynamic": True, "mode": "max-autotune-no-cudagraphs"}, "cpu")
    assert "mode" not in with_mode and with_mode["options"]["max_autotune"] is True
    assert with_mode["options"]["fallback_random"] is True
    torch.compile(torch.nn.Identity(), **with_mode)  # torch.compile validates the options when it is called
    explicit = {"dynamic": True, "options": {"fallback_random": False}}
    assert _device_compile_options(explicit, "cpu")["options"] == {"fallback_random": False}
    assert _device_compile_options({"mode": "max-autotune"}, "cuda") == {"mode": "max-autotune"}
    assert _device_compile_options({"backend": "eager"}, "cpu") == {"backend": "eager"}
