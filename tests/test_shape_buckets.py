"""Packed batches padded to a few shapes for CUDA graphs: the real tokens' outputs and gradients are unchanged, and
batches of different token counts meet the same compiled shape."""

from __future__ import annotations

import pytest
import torch
from compile_helpers import RecordingBackend, cached_loss_step, packed_bert, training_step
from varlen_on_cpu import varlen_kernels_on_cpu

from st_contrast.modules.shape_buckets import (
    FILLER_SEQUENCES,
    bucket_length,
    bucket_tokens,
    cut_packed_outputs,
    pad_packed_inputs,
)

pytestmark = pytest.mark.usefixtures("fresh_compiler")


def test_token_buckets_are_few_and_waste_little():
    counts = range(1, 70_000)
    buckets = [bucket_tokens(n) for n in counts]
    assert all(bucket >= n + FILLER_SEQUENCES for n, bucket in zip(counts, buckets, strict=True))
    assert all(bucket % 64 == 0 for bucket in buckets)
    small = {bucket for n, bucket in zip(counts, buckets, strict=True) if n + FILLER_SEQUENCES <= 1024}
    assert small == {64 * k for k in range(1, 17)}
    large = [(n, bucket) for n, bucket in zip(counts, buckets, strict=True) if n + FILLER_SEQUENCES > 1024]
    assert all(bucket <= 1.125 * (n + FILLER_SEQUENCES) for n, bucket in large)
    assert len({bucket for n, bucket in large if 2048 <= n < 8192}) <= 17  # 8 per doubling
    assert [bucket_length(n) for n in (1, 64, 65, 200)] == [64, 64, 128, 256]


def test_filler_is_sequences_of_its_own():
    cu = torch.tensor([0, 3, 10], dtype=torch.int32)
    inputs = {
        "input_ids": torch.arange(1, 11)[None],
        "position_ids": torch.tensor([[0, 1, 2, 0, 1, 2, 3, 4, 5, 6]]),
        "seq_idx": torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1, 1, 1]], dtype=torch.int32),
        "labels": torch.arange(10)[None],
        "cu_seq_lens_q": cu,
        "cu_seq_lens_k": cu,
        "max_length_q": 7,
        "max_length_k": 7,
        "return_dict": True,
    }
    padded, tokens = pad_packed_inputs(inputs)
    assert tokens == 10 and padded["input_ids"].shape == (1, 64) and padded["return_dict"] is True
    ends = padded["cu_seq_lens_q"]
    assert ends.dtype == torch.int32 and ends[:3].tolist() == [0, 3, 10] and ends[-1] == 64
    lengths = ends.diff()[2:]
    assert len(lengths) == FILLER_SEQUENCES and lengths.min() >= 1 and lengths.sum() == 54
    assert torch.equal(padded["cu_seq_lens_k"], ends) and padded["max_length_q"] == padded["max_length_k"] == 64
    assert padded["input_ids"][0, 10:].eq(0).all() and padded["position_ids"][0, 10:].eq(0).all()
    assert padded["labels"][0, 10:].eq(-100).all() and torch.equal(padded["labels"][0, :10], torch.arange(10))
    # each filler token is in its own filler sequence (index 2 + piece), as transformers' collator numbers them
    expected_seq_idx = torch.repeat_interleave(torch.arange(2, 2 + FILLER_SEQUENCES), lengths.long())
    assert torch.equal(padded["seq_idx"][0, 10:], expected_seq_idx.to(torch.int32))
    unpacked = {"input_ids": torch.ones(2, 5, dtype=torch.long)}
    assert pad_packed_inputs(unpacked) == (unpacked, None)


def test_outputs_are_cut_to_the_real_tokens_and_copied():
    hidden = torch.randn(1, 64, 8)
    outputs = {
        "last_hidden_state": hidden,
        "hidden_states": (hidden, hidden * 2),
        "pooler_output": torch.randn(1, 64),  # [1, hidden]: a hidden size equal to the bucket is not a token axis
        "loss": None,
    }
    cut = cut_packed_outputs(outputs, 10, 64)
    assert cut is outputs and cut["loss"] is None
    assert torch.equal(cut["last_hidden_state"], hidden[:, :10])
    assert [tuple(t.shape) for t in cut["hidden_states"]] == [(1, 10, 8), (1, 10, 8)]
    assert cut["pooler_output"].shape == (1, 64)
    hidden.zero_()  # a replay overwriting the graph's output memory leaves the returned outputs as they were
    assert cut["last_hidden_state"].abs().sum() > 0 and cut["hidden_states"][1].abs().sum() > 0


@pytest.mark.parametrize("backend", ["sdpa", "varlen"])
def test_bucketed_compiled_model_matches_eager_and_reuses_its_graph(backend, tiny_model_factory, monkeypatch):
    """``dynamic=False``: each new input shape would compile again; padded to buckets, batches of 4 texts with
    different token counts and longest texts all run one graph, of a bucketed shape, with eager's embeddings and
    gradients (``varlen`` runs through torch's custom op here, with CPU test kernels)."""
    recorder = RecordingBackend()
    texts = [
        ["a man plays a guitar", "two dogs", "a child is reading a book in the park", "rain"],
        ["the sun is out", "a cat sleeps on the warm windowsill all day long", "people dance", "cars"],
        ["hi", "a woman rides a bike", "birds fly south", "an old man walks his dog along the quiet beach"],
    ]
    path = tiny_model_factory("bert")
    with varlen_kernels_on_cpu(monkeypatch):
        eager = packed_bert(path, backend)
        compiled = packed_bert(path, backend, {"backend": recorder, "dynamic": False, "bucket_shapes": True})
        assert len({compiled.preprocess(batch)["input_ids"].shape[1] for batch in texts}) == 3  # unpadded: 3 shapes
        for batch in texts:
            expected = training_step(eager, batch)
            torch.testing.assert_close(training_step(compiled, batch), expected, atol=1e-5, rtol=1e-5)
        assert recorder.token_counts == [64]
        compiled.eval()
        torch.testing.assert_close(compiled.encode(texts[0]), eager.encode(texts[0]), atol=1e-5, rtol=1e-5)


def test_cached_loss_over_bucketed_shapes_matches_eager(tiny_model_factory, snli_sentences):
    """GradCache embeds a batch in mini-batches, keeps their embeddings and replays them in its backward: over
    bucketed (padded, cut and copied) outputs its loss and gradients are those of the unbucketed eager model."""
    path = tiny_model_factory("bert")
    eager = packed_bert(path, "sdpa")
    bucketed = packed_bert(path, "sdpa", {"backend": "eager", "bucket_shapes": True})
    for start in (0, 16):
        anchors, positives = snli_sentences[start : start + 16], snli_sentences[start + 100 : start + 116]
        expected = cached_loss_step(eager, anchors, positives)
        torch.testing.assert_close(cached_loss_step(bucketed, anchors, positives), expected, atol=1e-5, rtol=1e-5)
