"""GPU paths: PyTorch varlen / flash-attn kernels and bf16 FlashTransformer parity (skip without CUDA)."""

from __future__ import annotations

import pytest
import torch
from compile_helpers import RecordingBackend, cached_loss_step, packed_bert, training_step
from conftest import DECODERS, ENCODERS, NO_SDPA
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Transformer
from sentence_transformers.sentence_transformer.modules import Normalize, Pooling

from st_contrast.attention import available_backends, cu_seqlens_from_lengths, sdpa_varlen_attention
from st_contrast.attention.backends import get_kernel
from st_contrast.modules import FlashTransformer, resolved_attention_backend

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

LENGTHS = [1, 37, 5, 128, 64, 9]


def _gpu_backends() -> list[str]:
    if not torch.cuda.is_available():
        return []
    return [name for name in ("varlen", "flash_attn", "block_diagonal") if available_backends()[name] is None]


@pytest.mark.parametrize("backend", ["varlen", "flash_attn", "block_diagonal"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("window", [None, (15, 15)])
def test_gpu_kernel_matches_exact_kernel(backend, causal, window):
    if backend not in _gpu_backends():
        pytest.skip(f"{backend}: {available_backends()[backend]}")
    torch.manual_seed(0)
    total, heads, kv_heads, dim = sum(LENGTHS), 8, 2, 64
    q = torch.randn(total, heads, dim, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(total, kv_heads, dim, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(total, kv_heads, dim, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    cu = cu_seqlens_from_lengths(torch.tensor(LENGTHS, device="cuda"))
    if causal and window is not None:
        window = (window[0], 0)
    kwargs = dict(causal=causal, scale=dim**-0.5, dropout=0.0, window=window)
    out = get_kernel(backend)(q, k, v, cu, max(LENGTHS), **kwargs)
    expected = sdpa_varlen_attention(q.float(), k.float(), v.float(), cu, max(LENGTHS), **kwargs)
    torch.testing.assert_close(out.float(), expected, atol=2e-2, rtol=2e-2)
    out.float().square().sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


@pytest.mark.parametrize("backend", ["auto", "varlen", "sdpa", "block_diagonal"])
def test_bf16_minilm_matches_padded_stock(backend, minilm_path, snli_sentences):
    if backend == "varlen" and "varlen" not in _gpu_backends():
        pytest.skip(f"varlen: {available_backends()['varlen']}")
    bf16 = {"dtype": torch.bfloat16}
    stock = SentenceTransformer(minilm_path, device="cuda", model_kwargs=bf16).eval()
    flash_backbone = FlashTransformer(minilm_path, attention_backend=backend, max_seq_length=256, model_kwargs=bf16)
    flash = SentenceTransformer(modules=[flash_backbone, Pooling(384, "mean"), Normalize()], device="cuda").eval()
    texts = ["", *snli_sentences[:62], " ".join(snli_sentences[:80])]
    expected = stock.encode(texts, convert_to_tensor=True).float()
    actual = flash.encode(texts, convert_to_tensor=True).float()
    cosine = torch.nn.functional.cosine_similarity(actual, expected, dim=-1)
    assert cosine.min().item() >= 0.999, cosine.min().item()
    if backend == "auto":
        assert resolved_attention_backend(flash_backbone) in ("varlen", "flash_attn")


@pytest.mark.parametrize("name", ENCODERS + DECODERS)
def test_bf16_every_packed_architecture_on_gpu(name, tiny_model_factory, snli_sentences):
    """Each packed architecture, bf16 on the GPU with the kernel "auto" picks, against stock padded bf16."""
    path = tiny_model_factory(name)
    bf16 = {"dtype": torch.bfloat16}
    implementation = "eager" if name in NO_SDPA else "sdpa"
    stock = Transformer(path, model_kwargs={**bf16, "attn_implementation": implementation})
    flash = FlashTransformer(path, attention_backend="auto", model_kwargs=bf16)
    models = [SentenceTransformer(modules=[m, Pooling(32, "mean")], device="cuda").eval() for m in (stock, flash)]
    texts = ["", *snli_sentences[:30], " ".join(snli_sentences[:40])]
    expected, actual = (model.encode(texts, convert_to_tensor=True).float() for model in models)
    cosine = torch.nn.functional.cosine_similarity(actual, expected, dim=-1)
    assert cosine.min() > 0.99, (resolved_attention_backend(flash), cosine.min())
    tokens = models[1].encode(texts[:4], output_value="token_embeddings")
    assert [len(t) for t in tokens] == [len(t) for t in models[0].encode(texts[:4], output_value="token_embeddings")]


def test_flash_attn_softcap_matches_exact_kernel():
    if "flash_attn" not in _gpu_backends():
        pytest.skip(f"flash_attn: {available_backends()['flash_attn']}")
    torch.manual_seed(0)
    q, k, v = (torch.randn(sum(LENGTHS), 4, 64, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    cu = cu_seqlens_from_lengths(torch.tensor(LENGTHS, device="cuda"))
    kwargs = dict(causal=False, scale=0.125, dropout=0.0, window=None, softcap=2.0)
    out = get_kernel("flash_attn")(q, k, v, cu, max(LENGTHS), **kwargs)
    expected = sdpa_varlen_attention(q.float(), k.float(), v.float(), cu, max(LENGTHS), **kwargs)
    torch.testing.assert_close(out.float(), expected, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("name", ["llama", "nomic_bert"])
def test_rotary_model_in_mixed_precision_runs_a_gpu_kernel(name, tiny_model_factory, snli_sentences, monkeypatch):
    """``bf16: true`` training is fp32 weights under autocast: rotary q/k come out fp32 beside bf16 v, and the packed
    layer must still run a GPU kernel (in bf16) and match stock padded attention under the same autocast."""
    if not _gpu_backends():
        pytest.skip("no GPU varlen kernel here")
    from st_contrast.attention import interface

    resolved = []
    resolve = interface.resolve_backend
    monkeypatch.setattr(interface, "resolve_backend", lambda *a, **k: resolved.append(resolve(*a, **k)) or resolved[-1])
    path = tiny_model_factory(name)
    stock = SentenceTransformer(modules=[Transformer(path), Pooling(32, "mean")], device="cuda")
    flash = SentenceTransformer(
        modules=[FlashTransformer(path, attention_backend="auto"), Pooling(32, "mean")], device="cuda"
    )
    texts = snli_sentences[:16]
    with torch.autocast("cuda", dtype=torch.bfloat16):
        expected = stock.encode(texts, convert_to_tensor=True).float()
        actual = flash.encode(texts, convert_to_tensor=True).float()
        flash.train()
        features = {
            key: value.to("cuda") if torch.is_tensor(value) else value for key, value in flash.preprocess(texts).items()
        }
        flash(features)["sentence_embedding"].float().sum().backward()
    assert resolved and set(resolved) <= {"varlen", "flash_attn"}, resolved
    cosine = torch.nn.functional.cosine_similarity(actual, expected, dim=-1)
    assert cosine.min() > 0.99, cosine.min()


@pytest.mark.usefixtures("fresh_compiler")
def test_compiled_packed_model_traces_the_gpu_kernel_into_one_graph(tiny_model_factory, snli_sentences):
    """``compile=True`` on a GPU: torch's varlen kernel is traced (``fullgraph=True`` refuses a graph break), one graph
    serves every batch shape, and the compiled model's embeddings and gradients are the eager packed model's."""
    if "varlen" not in _gpu_backends():
        pytest.skip(f"varlen: {available_backends()['varlen']}")
    recorder, path, bf16 = RecordingBackend(), tiny_model_factory("bert"), torch.bfloat16
    eager = packed_bert(path, "varlen", device="cuda", dtype=bf16)
    compiled = packed_bert(path, "varlen", {"backend": recorder, "fullgraph": True}, device="cuda", dtype=bf16)
    for texts in (snli_sentences[:8], [*snli_sentences[8:20], " ".join(snli_sentences[:30])], snli_sentences[40:43]):
        torch.testing.assert_close(training_step(compiled, texts), training_step(eager, texts), atol=2e-2, rtol=2e-2)
    assert len(recorder.graphs) == 1, "a new batch shape recompiled the packed model"
    assert "torch_attn._varlen_attn" in recorder.graphs[0].code


@pytest.mark.usefixtures("fresh_compiler")
def test_cuda_graphs_over_bucketed_shapes_train_like_eager(tiny_model_factory, snli_sentences):
    """``compile={"mode": "reduce-overhead"}`` on a GPU: packed batches are padded to bucketed shapes and run as
    recorded CUDA graphs. A cached loss keeps earlier mini-batches' embeddings while later ones replay the same graphs,
    and replays them again in its backward: its loss and gradients must still be the eager model's."""
    if "varlen" not in _gpu_backends():
        pytest.skip(f"varlen: {available_backends()['varlen']}")
    path, bf16 = tiny_model_factory("bert"), torch.bfloat16
    eager = packed_bert(path, "varlen", device="cuda", dtype=bf16)
    graphed = packed_bert(path, "varlen", {"mode": "reduce-overhead"}, device="cuda", dtype=bf16)
    for start in (0, 16, 32, 0):  # the last batch comes back: its graphs replay
        anchors, positives = snli_sentences[start : start + 16], snli_sentences[start + 100 : start + 116]
        expected = cached_loss_step(eager, anchors, positives)
        torch.testing.assert_close(cached_loss_step(graphed, anchors, positives), expected, atol=3e-2, rtol=3e-2)
