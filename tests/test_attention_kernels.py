"""The packed attention kernels against a hand-written per-sequence softmax(QK^T)V."""

from __future__ import annotations

import math

import pytest
import torch

from st_contrast.attention import (
    PackedLayout,
    SharedRowsLayout,
    block_diagonal_attention,
    cu_seqlens_from_attention_mask,
    cu_seqlens_from_lengths,
    packed_position_ids,
    resolve_backend,
    sdpa_varlen_attention,
)

LENGTHS = [1, 7, 3, 12, 5]
"""Shared rows 12 slots wide hold [1, 7, 3], [12] and [5]: rows with several sequences, a full row, a padded one."""
EXACT_KERNELS = {"sdpa": sdpa_varlen_attention, "block_diagonal": block_diagonal_attention}


def reference_attention(q, k, v, lengths, *, causal, scale, window, softcap=None):
    """Loop over sequences; plain matmul-softmax with explicit causal / window masks (and Gemma2's soft-capping)."""
    outputs, start = [], 0
    groups = q.shape[1] // k.shape[1]
    for length in lengths:
        qs = q[start : start + length].transpose(0, 1)  # heads, L, D
        ks = k[start : start + length].repeat_interleave(groups, dim=1).transpose(0, 1)
        vs = v[start : start + length].repeat_interleave(groups, dim=1).transpose(0, 1)
        scores = qs @ ks.transpose(-1, -2) * scale
        if softcap is not None:
            scores = torch.tanh(scores / softcap) * softcap
        i = torch.arange(length).unsqueeze(1)
        j = torch.arange(length).unsqueeze(0)
        allowed = torch.ones(length, length, dtype=torch.bool)
        if causal:
            allowed &= j <= i
        if window is not None:
            left, right = window
            allowed &= (i - j <= left) & (j - i <= (0 if causal else right))
        scores = scores.masked_fill(~allowed, float("-inf"))
        outputs.append((scores.softmax(-1) @ vs).transpose(0, 1))
        start += length
    return torch.cat(outputs)


@pytest.mark.parametrize("softcap", [None, 0.7])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("window", [None, (2, 2)])
@pytest.mark.parametrize("kv_heads", [4, 2])
@pytest.mark.parametrize("kernel", list(EXACT_KERNELS))
def test_cpu_kernel_matches_reference(kernel, causal, window, kv_heads, softcap):
    torch.manual_seed(0)
    total, heads, dim = sum(LENGTHS), 4, 8
    q = torch.randn(total, heads, dim, dtype=torch.float64, requires_grad=True)
    k = torch.randn(total, kv_heads, dim, dtype=torch.float64, requires_grad=True)
    v = torch.randn(total, kv_heads, dim, dtype=torch.float64, requires_grad=True)
    cu = cu_seqlens_from_lengths(torch.tensor(LENGTHS))
    scale = 0.3
    out = EXACT_KERNELS[kernel](
        q, k, v, cu, max(LENGTHS), causal=causal, scale=scale, dropout=0.0, window=window, softcap=softcap
    )
    expected = reference_attention(q, k, v, LENGTHS, causal=causal, scale=scale, window=window, softcap=softcap)
    torch.testing.assert_close(out, expected)
    if softcap is not None:  # the cap matters at this scale
        uncapped = reference_attention(q, k, v, LENGTHS, causal=causal, scale=scale, window=window)
        assert (uncapped - expected).abs().max() > 1e-2

    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    expected_grads = torch.autograd.grad(expected.square().sum(), (q, k, v))
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        assert torch.isfinite(grad).all()
        torch.testing.assert_close(grad, expected_grad)


@pytest.mark.parametrize("kernel", list(EXACT_KERNELS))
def test_default_scale_is_inverse_sqrt_dim(kernel):
    torch.manual_seed(1)
    q, k, v = (torch.randn(sum(LENGTHS), 2, 16) for _ in range(3))
    cu = cu_seqlens_from_lengths(torch.tensor(LENGTHS))
    out = EXACT_KERNELS[kernel](q, k, v, cu, max(LENGTHS), causal=False, scale=None, dropout=0.0, window=None)
    expected = reference_attention(q, k, v, LENGTHS, causal=False, scale=1 / math.sqrt(16), window=None)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_layout_round_trip_and_positions():
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1], [1, 0, 0, 0]])  # any padding side
    cu = cu_seqlens_from_attention_mask(mask)
    assert cu.tolist() == [0, 2, 6, 7] and cu.dtype == torch.int32
    assert packed_position_ids(cu).tolist() == [[0, 1, 0, 1, 2, 3, 0]]
    assert packed_position_ids(cu, offset=2)[0, :2].tolist() == [2, 3]

    layout = PackedLayout(cu, max_len=4)
    packed = torch.arange(7.0).unsqueeze(-1)
    padded = layout.to_padded(packed)
    assert padded.shape == (3, 4, 1)
    assert layout.valid.sum().item() == 7
    torch.testing.assert_close(layout.to_packed(padded), packed)
    assert padded[~layout.valid].eq(0).all()  # pad slots hold zeros


def test_layout_moves_have_the_gradients_of_indexing():
    """Both moves backpropagate by a gather; checked against finite differences (first and second order) and
    against plain indexing's scatter-add gradient."""
    cu = cu_seqlens_from_lengths(torch.tensor([3, 1, 4]))
    layout = PackedLayout(cu, max_len=4)
    packed = torch.randn(8, 2, 3, dtype=torch.float64, requires_grad=True)
    padded = torch.randn(3, 4, 2, 3, dtype=torch.float64, requires_grad=True)
    for move, value in ((layout.to_padded, packed), (layout.to_packed, padded)):
        assert torch.autograd.gradcheck(move, (value,))
        assert torch.autograd.gradgradcheck(move, (value,))

    weight = torch.randn(3, 4, 2, 3, dtype=torch.float64)
    (grad,) = torch.autograd.grad((layout.to_padded(packed) * weight).sum(), packed)
    rows, slots = layout.valid.nonzero(as_tuple=True)  # packed order
    expected = torch.zeros_like(packed).index_put(
        (layout.padded_index[rows, slots],), weight[rows, slots], accumulate=True
    )
    torch.testing.assert_close(grad, expected)


def test_shared_rows_fill_rows_in_order_and_move_tokens_both_ways():
    layout = SharedRowsLayout.from_cu_seqlens(cu_seqlens_from_lengths(torch.tensor(LENGTHS)))
    assert (layout.rows, layout.width) == (3, 12) and not layout.one_sequence_per_row
    assert layout.segment[0].tolist() == [0] + [1] * 7 + [2] * 3 + [-1]
    assert layout.segment[1].tolist() == [3] * 12
    assert layout.segment[2].tolist() == [4] * 5 + [-1] * 7
    packed = torch.randn(sum(LENGTHS), 2, 3, dtype=torch.float64, requires_grad=True)
    padded = layout.to_padded(packed)
    torch.testing.assert_close(padded[0, 1:8], packed[1:8])  # the second sequence, right after the first
    assert padded[~layout.valid].eq(0).all()
    torch.testing.assert_close(layout.to_packed(padded), packed)
    assert torch.autograd.gradcheck(layout.to_padded, (packed,))
    assert torch.autograd.gradcheck(layout.to_packed, (padded.detach().requires_grad_(),))

    mask = layout.attention_mask(causal=True, window=None)[0, 0]
    assert mask[3].tolist() == [False, True, True, True] + [False] * 8  # slot 3: sequence 1's third token
    assert SharedRowsLayout.from_cu_seqlens(cu_seqlens_from_lengths(torch.tensor([5, 4, 5]))).one_sequence_per_row


def test_dropout_in_block_diagonal_rows_stays_inside_each_sequence():
    """With attention dropout, a token's output still only mixes values of its own sequence."""
    torch.manual_seed(2)
    cu = cu_seqlens_from_lengths(torch.tensor(LENGTHS))
    q, k = torch.randn(2, sum(LENGTHS), 2, 8)
    value = torch.zeros(sum(LENGTHS), 2, 8)
    value[1:8] = 1.0  # only the second sequence carries values
    out = block_diagonal_attention(q, k, value, cu, max(LENGTHS), causal=False, scale=None, dropout=0.5, window=None)
    outside = torch.ones(sum(LENGTHS), dtype=torch.bool)
    outside[1:8] = False
    assert out[outside].eq(0).all() and out[1:8].ne(0).any()


def test_empty_sequences_are_refused():
    with pytest.raises(ValueError, match="at least one token"):
        cu_seqlens_from_lengths(torch.tensor([3, 0, 2]))


def test_auto_resolution_on_cpu():
    assert resolve_backend("auto", torch.device("cpu"), torch.float32) == "block_diagonal"
    assert resolve_backend("auto", torch.device("cpu"), torch.bfloat16) == "block_diagonal"
    assert resolve_backend("auto", torch.device("cpu"), torch.float32, lengths_on_host=False) == "sdpa"  # traced
    assert resolve_backend("cpu", torch.device("cpu"), torch.float32) == "sdpa"  # the former name still works
    with pytest.raises(ValueError, match="Unknown attention backend"):
        resolve_backend("xformers", torch.device("cpu"), torch.float32)


def test_softcap_is_refused_by_the_varlen_kernel_and_skipped_by_auto():
    from st_contrast.attention.backends import torch_varlen_attention

    q = torch.randn(4, 2, 8)
    cu = cu_seqlens_from_lengths(torch.tensor([4]))
    with pytest.raises(ValueError, match="'varlen' has no attention logit soft-capping.*'block_diagonal' or 'sdpa'"):
        torch_varlen_attention(q, q, q, cu, 4, causal=False, scale=None, dropout=0.0, window=None, softcap=50.0)
    if torch.cuda.is_available():
        auto = resolve_backend("auto", torch.device("cuda"), torch.bfloat16, softcap=True)
        assert auto in ("block_diagonal", "flash_attn")


def test_a_flash_attn_that_does_not_import_is_passed_over(tmp_path, monkeypatch):
    """A flash-attn built for another torch is found but fails on import: ``auto`` picks PyTorch's varlen kernel on a
    GPU instead of failing in every attention layer, and the explicit backend says why it cannot run."""
    from st_contrast.attention import backends

    package = tmp_path / "flash_attn"
    package.mkdir()
    (package / "__init__.py").write_text('raise ImportError("flash_attn_2_cuda.so: undefined symbol: _ZN3c10")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    backends._flash_attn_problem.cache_clear()
    backends._availability.cache_clear()
    try:
        monkeypatch.setattr(backends.torch.cuda, "is_available", lambda: True)
        assert resolve_backend("auto", torch.device("cuda"), torch.bfloat16) == "varlen"
        with pytest.raises(ValueError, match="flash-attn is installed but does not import.*undefined symbol"):
            resolve_backend("flash_attn", torch.device("cuda"), torch.bfloat16)
    finally:
        backends._flash_attn_problem.cache_clear()
        backends._availability.cache_clear()
