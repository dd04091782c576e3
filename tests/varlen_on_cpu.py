"""torch's ``varlen_attn`` custom ops with CPU kernels, for tests: the ``varlen`` backend's code path under
``torch.compile`` (tracing, shape functions, autograd) on a machine without CUDA.

The kernels are a per-sequence softmax(QK^T)V written out by hand, forward and backward (the backward op is called
below autograd, where no graph can be recorded), for bidirectional and causal attention with as many key as query
heads. They are registered only inside :func:`varlen_kernels_on_cpu`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch

from st_contrast.attention import interface


def _probabilities(query: torch.Tensor, key: torch.Tensor, scale: float, causal: bool) -> torch.Tensor:
    """``[heads, L, L]`` attention probabilities of one sequence's ``[L, heads, dim]`` query and key."""
    scores = query.transpose(0, 1) @ key.permute(1, 2, 0) * scale
    if causal:
        length = query.shape[0]
        scores = scores.masked_fill(~torch.ones(length, length, dtype=torch.bool).tril(), float("-inf"))
    return scores.softmax(-1)


def _spans(cu_seqlens: torch.Tensor) -> list[tuple[int, int]]:
    bounds = cu_seqlens.tolist()
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def _check(query: torch.Tensor, key: torch.Tensor, window_size: list[int] | None) -> None:
    if key.shape[1] != query.shape[1] or (window_size is not None and list(window_size) != [-1, -1]):
        raise NotImplementedError("the test kernels have no grouped-query or sliding-window attention")


def varlen_forward(
    query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, is_causal=False, scale=None, window_size=None, *unused
):
    _check(query, key, window_size)
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    out = torch.empty_like(query)
    for start, end in _spans(cu_seq_q):
        probabilities = _probabilities(query[start:end], key[start:end], scale, is_causal)
        out[start:end] = (probabilities @ value[start:end].transpose(0, 1)).transpose(0, 1)
    logsumexp = torch.zeros(query.shape[1], query.shape[0])  # the test backward recomputes the probabilities
    return out, logsumexp, torch.zeros(2, dtype=torch.uint64)


def varlen_backward(
    grad_out,
    query,
    key,
    value,
    out,
    logsumexp,
    cu_seq_q,
    cu_seq_k,
    max_q,
    max_k,
    is_causal,
    rng_state,
    scale=None,
    window_size=None,
):
    _check(query, key, window_size)
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    grads = torch.empty_like(query), torch.empty_like(key), torch.empty_like(value)
    for start, end in _spans(cu_seq_q):
        q, k, v, dout = (t[start:end].transpose(0, 1) for t in (query, key, value, grad_out))
        probabilities = _probabilities(query[start:end], key[start:end], scale, is_causal)
        dprobabilities = dout @ v.transpose(-1, -2)
        dscores = probabilities * (dprobabilities - (dprobabilities * probabilities).sum(-1, keepdim=True))
        dq, dk, dv = dscores @ k * scale, dscores.transpose(-1, -2) @ q * scale, probabilities.transpose(-1, -2) @ dout
        for grad, part in zip(grads, (dq, dk, dv), strict=True):
            grad[start:end] = part.transpose(0, 1)
    return grads


@contextlib.contextmanager
def varlen_kernels_on_cpu(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """CPU kernels for ``torch_attn::_varlen_attn`` (and its backward), and ``attention_backend="varlen"`` allowed
    on CPU tensors, until the block ends."""
    pytest.importorskip("torch.nn.attention.varlen")
    resolve = interface.resolve_backend

    def resolve_varlen_on_cpu(name, device, dtype, **kwargs):
        return "varlen" if name == "varlen" else resolve(name, device, dtype, **kwargs)

    with torch.library._scoped_library("torch_attn", "IMPL") as library:
        library.impl("_varlen_attn", varlen_forward, "CPU")
        library.impl("_varlen_attn_backward", varlen_backward, "CPU")
        with monkeypatch.context() as patch:
            patch.setattr(interface, "resolve_backend", resolve_varlen_on_cpu)
            yield
