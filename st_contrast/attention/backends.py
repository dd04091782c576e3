"""Variable-length attention kernels for packed batches, and the choice between them.

Every kernel takes packed ``q [total, heads, dim]``, ``k``/``v [total, kv_heads, dim]`` and the
``cu_seqlens`` of the batch, attends only within each sequence, and returns ``[total, heads, dim]``:

- ``varlen``: :func:`torch.nn.attention.varlen.varlen_attn`, PyTorch's own flash kernel (CUDA,
  fp16/bf16; no ``flash_attn`` build needed). Its signature changed across torch releases, so the
  call is adapted to whatever the installed version accepts.
- ``flash_attn``: ``flash_attn.flash_attn_varlen_func`` from the ``flash-attn`` package.
- ``sdpa``: exact on any device and dtype (CPU, and GPUs in fp32): the sequences are regrouped into a
  padded batch, run through :func:`torch.nn.functional.scaled_dot_product_attention` with a key mask and
  scattered back. The projections and MLPs around it still only see real tokens. ``cpu`` is its former
  name, still accepted (saved configurations and scripts use it).
- ``block_diagonal``: exact on any device and dtype, like ``sdpa``, but several sequences share each padded row
  (:class:`~st_contrast.attention.shared_rows.SharedRowsLayout`) and a block-diagonal mask keeps them apart: about
  ``total_tokens * max_len`` attention scores instead of ``batch * max_len**2``, the difference on short sentences
  with a few long ones. It reads the sequence lengths on the host once per forward pass; a backbone compiled by
  :func:`~st_contrast.modules.compile_backbone` does so before its graph and traces the kernel, elsewhere under
  ``torch.compile`` it runs between the compiled graphs.
- ``auto``: ``flash_attn`` if importable, else ``varlen``, for fp16/bf16 CUDA tensors; otherwise
  ``block_diagonal``, or ``sdpa`` where ``torch.compile`` traces a call that has no layout handed in. Resolved per
  call from the tensors, so the same model runs on CPU and GPU.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import logging
import math
from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F

from st_contrast.attention.packing import packed_layout
from st_contrast.attention.shared_rows import SharedRowsLayout, shared_rows_layout

__all__ = [
    "ATTENTION_BACKENDS",
    "available_backends",
    "resolve_backend",
    "sdpa_varlen_attention",
    "block_diagonal_attention",
    "torch_varlen_attention",
    "flash_attn_varlen_attention",
    "BACKEND_ALIASES",
    "canonical_backend_name",
    "check_backend_name",
    "get_kernel",
]

logger = logging.getLogger(__name__)

ATTENTION_BACKENDS = ("auto", "varlen", "flash_attn", "sdpa", "block_diagonal")
BACKEND_ALIASES = {"cpu": "sdpa"}
"""Former backend names, accepted wherever a backend is named."""
_HALF_DTYPES = (torch.float16, torch.bfloat16)


class VarlenAttention(Protocol):
    def __call__(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        cu_seqlens: torch.Tensor,
        max_len: int,
        *,
        causal: bool,
        scale: float | None,
        dropout: float,
        window: tuple[int, int] | None,
        softcap: float | None = None,
    ) -> torch.Tensor: ...


def sdpa_varlen_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_len: int,
    *,
    causal: bool,
    scale: float | None,
    dropout: float,
    window: tuple[int, int] | None,
    softcap: float | None = None,
) -> torch.Tensor:
    """Exact reference kernel: regroup to ``[batch, heads, max_len, dim]``, masked SDPA, unpad.

    With ``softcap`` (Gemma2's attention logit soft-capping, ``tanh(scores / softcap) * softcap``), which SDPA
    cannot apply, the scores are computed explicitly, as transformers' eager attention does.
    """
    layout = packed_layout(cu_seqlens, max_len, total_tokens=query.shape[0])
    q, k, v = (layout.to_padded(t).transpose(1, 2) for t in (query, key, value))
    mask = layout.attention_mask(causal, window)
    if softcap is not None:
        out = _softcapped_attention(q, k, v, mask, causal=causal, scale=scale, dropout=dropout, softcap=softcap)
        return layout.to_packed(out.transpose(1, 2))
    out = F.scaled_dot_product_attention(
        q,
        k,
        v,
        attn_mask=mask,
        dropout_p=dropout,
        is_causal=causal and mask is None,
        scale=scale,
        enable_gqa=k.shape[1] != q.shape[1],
    )
    return layout.to_packed(out.transpose(1, 2))


def block_diagonal_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_len: int,
    *,
    causal: bool,
    scale: float | None,
    dropout: float,
    window: tuple[int, int] | None,
    softcap: float | None = None,
    layout: SharedRowsLayout | None = None,
) -> torch.Tensor:
    """Exact kernel over rows shared by several sequences (``max_len`` is not needed: the rows are as wide as the
    longest sequence). When no row holds two sequences, the layout is the ``sdpa`` kernel's, which runs instead.
    ``layout``: worked out already (a compiled backbone's); by default built from ``cu_seqlens`` on the host."""
    layout = layout if layout is not None else shared_rows_layout(cu_seqlens)
    if layout.one_sequence_per_row:
        return sdpa_varlen_attention(
            query,
            key,
            value,
            cu_seqlens,
            layout.width,
            causal=causal,
            scale=scale,
            dropout=dropout,
            window=window,
            softcap=softcap,
        )
    q, k, v = (layout.to_padded(t).transpose(1, 2) for t in (query, key, value))
    mask = layout.attention_mask(causal, window)
    if softcap is not None:
        out = _softcapped_attention(q, k, v, mask, causal=False, scale=scale, dropout=dropout, softcap=softcap)
    else:
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=dropout, scale=scale, enable_gqa=k.shape[1] != q.shape[1]
        )
    return layout.to_packed(out.transpose(1, 2))


def _softcapped_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    *,
    causal: bool,
    scale: float | None,
    dropout: float,
    softcap: float,
) -> torch.Tensor:
    """Attention with soft-capped logits on ``[batch, heads, len, dim]`` tensors (boolean ``mask``: True attends)."""
    if k.shape[1] != q.shape[1]:
        groups = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    scores = torch.matmul(q, k.transpose(-1, -2)) * (q.shape[-1] ** -0.5 if scale is None else scale)
    scores = torch.tanh(scores / softcap) * softcap
    if mask is None and causal:
        mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    probs = torch.softmax(scores, dim=-1, dtype=torch.promote_types(q.dtype, torch.float32)).to(q.dtype)
    if dropout > 0.0:
        probs = F.dropout(probs, p=dropout, training=True)
    return torch.matmul(probs, v)


_varlen_parameters: tuple[str, ...] = ()


@torch.compiler.assume_constant_result
def _torch_varlen_parameters() -> tuple[str, ...]:
    """The parameter names of the installed torch's ``varlen_attn``, read once (a constant under ``torch.compile``,
    which would warn about tracing through a ``functools.cache``)."""
    global _varlen_parameters
    if not _varlen_parameters:
        from torch.nn.attention.varlen import varlen_attn

        _varlen_parameters = tuple(inspect.signature(varlen_attn).parameters)
    return _varlen_parameters


@torch.compiler.assume_constant_result
def _warn_no_varlen_dropout() -> None:
    """Say once that ``varlen`` leaves out the model's attention dropout. Under ``torch.compile`` this runs while the
    graph is traced (a constant-result function), so it warns without breaking the graph."""
    _warn_once(
        "torch varlen_attn has no attention dropout: the model's attention dropout is not applied in training. "
        "Use attention_backend='flash_attn', 'sdpa' or 'block_diagonal' to keep it."
    )


def torch_varlen_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_len: int,
    *,
    causal: bool,
    scale: float | None,
    dropout: float,
    window: tuple[int, int] | None,
    softcap: float | None = None,
) -> torch.Tensor:
    """:func:`torch.nn.attention.varlen.varlen_attn`, adapted to the installed torch's signature.

    torch 2.10 takes ``is_causal``; later releases take ``window_size`` (``(-1, 0)`` = causal),
    ``scale`` and ``enable_gqa``. Features the installed kernel lacks are emulated (scale, GQA) or
    refused (sliding windows). The kernel has no dropout.
    """
    from torch.nn.attention.varlen import varlen_attn

    if softcap is not None:
        raise ValueError(
            "attention_backend='varlen' has no attention logit soft-capping (Gemma2); use 'flash_attn', "
            "'block_diagonal' or 'sdpa' ('auto' picks one of them)."
        )
    params = _torch_varlen_parameters()
    if dropout > 0.0:
        _warn_no_varlen_dropout()
    kwargs: dict = {}
    if "window_size" in params:
        kwargs["window_size"] = window if window is not None else ((-1, 0) if causal else (-1, -1))
    else:
        if window is not None:
            raise ValueError(
                "This torch version's varlen_attn has no sliding-window support; upgrade torch (>= 2.11) "
                "or use attention_backend='flash_attn', 'block_diagonal' or 'sdpa'."
            )
        kwargs["is_causal"] = causal
    if scale is not None:
        if "scale" in params:
            kwargs["scale"] = scale
        else:
            query = query * (scale * math.sqrt(query.shape[-1]))
    if key.shape[1] != query.shape[1]:
        if "enable_gqa" in params:
            kwargs["enable_gqa"] = True
        else:
            groups = query.shape[1] // key.shape[1]
            key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    cu = cu_seqlens.to(torch.int32)
    return varlen_attn(query, key, value, cu, cu, max_len, max_len, **kwargs)


def flash_attn_varlen_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_len: int,
    *,
    causal: bool,
    scale: float | None,
    dropout: float,
    window: tuple[int, int] | None,
    softcap: float | None = None,
) -> torch.Tensor:
    """``flash_attn.flash_attn_varlen_func`` from the ``flash-attn`` package (``pip install st-contrast[flash]``)."""
    from flash_attn import flash_attn_varlen_func

    cu = cu_seqlens.to(torch.int32)
    return flash_attn_varlen_func(
        query,
        key,
        value,
        cu,
        cu,
        max_len,
        max_len,
        dropout_p=dropout,
        softmax_scale=scale,
        causal=causal,
        window_size=window if window is not None else (-1, -1),
        softcap=0.0 if softcap is None else softcap,
    )


_KERNELS: dict[str, VarlenAttention] = {
    "varlen": torch_varlen_attention,
    "flash_attn": flash_attn_varlen_attention,
    "sdpa": sdpa_varlen_attention,
    "block_diagonal": block_diagonal_attention,
}


@functools.cache
def _has_torch_varlen() -> bool:
    return importlib.util.find_spec("torch.nn.attention.varlen") is not None


@functools.cache
def _flash_attn_problem() -> str | None:
    """Why the flash-attn package cannot run here, or None. Imported, not only found: a build for another torch or
    CUDA (a common state after upgrading torch) fails on import, and ``auto`` must then pick ``varlen`` instead."""
    if importlib.util.find_spec("flash_attn") is None:
        return "the flash-attn package is not installed"
    try:
        from flash_attn import flash_attn_varlen_func  # noqa: F401
    except Exception as error:  # noqa: BLE001 - ImportError, OSError (undefined symbols), RuntimeError alike
        _warn_once(f"flash-attn is installed but does not import ({error!r}); packed attention does not use it.")
        return f"flash-attn is installed but does not import ({type(error).__name__}: {error})"
    return None


def _has_flash_attn() -> bool:
    return _flash_attn_problem() is None


def available_backends() -> dict[str, str | None]:
    """Each backend name mapped to None if it can run here, else the reason it cannot."""
    return dict(_availability())


@functools.cache
def _availability() -> dict[str, str | None]:
    """What :func:`available_backends` reports, computed once: it is consulted by every attention layer call."""
    cuda = torch.cuda.is_available()
    return {
        "auto": None,
        "sdpa": None,
        "block_diagonal": None,
        "varlen": None
        if _has_torch_varlen() and cuda
        else ("needs CUDA" if _has_torch_varlen() else f"torch {torch.__version__} has no torch.nn.attention.varlen"),
        "flash_attn": _flash_attn_problem() or (None if cuda else "needs CUDA"),
    }


def canonical_backend_name(name: str) -> str:
    """``name`` with former names mapped to the current ones (``"cpu"`` -> ``"sdpa"``); unknown names raise."""
    name = BACKEND_ALIASES.get(name, name)
    check_backend_name(name)
    return name


def check_backend_name(name: str) -> None:
    """Raise a ValueError naming the valid backends if ``name`` is neither one of them nor a former name."""
    if name not in ATTENTION_BACKENDS and name not in BACKEND_ALIASES:
        raise ValueError(f"Unknown attention backend {name!r}. Choose one of {list(ATTENTION_BACKENDS)}.")


def resolve_backend(
    name: str, device: torch.device, dtype: torch.dtype, softcap: bool = False, lengths_on_host: bool = True
) -> str:
    """The concrete backend ``name`` runs on for tensors of ``device`` / ``dtype``.

    ``auto`` never fails; an explicit backend that cannot run on these tensors raises a ValueError
    that says why and what to use instead. ``softcap``: the attention soft-caps its logits (Gemma2), which
    ``varlen`` cannot do, so ``auto`` skips it. ``lengths_on_host``: False where ``torch.compile`` traces a call that
    was handed no shared-rows layout, so ``auto`` picks a kernel it can trace (``sdpa`` rather than
    ``block_diagonal``).
    """
    name = canonical_backend_name(name)
    on_cuda_half = device.type == "cuda" and dtype in _HALF_DTYPES
    if name == "auto":
        if on_cuda_half and _has_flash_attn():
            return "flash_attn"
        if on_cuda_half and _has_torch_varlen() and not softcap:
            return "varlen"
        return "block_diagonal" if lengths_on_host else "sdpa"
    if name in ("varlen", "flash_attn"):
        reason = _availability()[name]
        if reason is None and not on_cuda_half:
            reason = f"needs fp16/bf16 CUDA tensors, got {dtype} on {device.type}"
        if reason is not None:
            raise ValueError(
                f"attention_backend={name!r} cannot run here: {reason}. "
                "Use attention_backend='auto' (picks the best available) or 'sdpa' (exact, any device)."
            )
    return name


def get_kernel(name: str) -> Callable[..., torch.Tensor]:
    """The kernel function of a concrete (resolved) backend name."""
    return _KERNELS[name]


@functools.cache
def _warn_once(message: str) -> None:
    logger.warning(message)
