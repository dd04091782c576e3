"""Packed attention as transformers attention implementations (``AttentionInterface``).

Each backend is registered under its own implementation name (``st_packed_<backend>``; the ``sdpa``
backend as ``st_packed_exact``, ``flash_attn`` as ``st_packed_dao``), so the choice lives in
``config._attn_implementation`` of the model that uses it and every attention layer of every model that routes
through ``ALL_ATTENTION_FUNCTIONS`` can run packed. transformers reads substrings of these names: "sdpa" makes it
demand the model's own SDPA support (Gemma2 and others have none, though they run packed), hence
``st_packed_exact``; "flash" makes it look for a flash-attention kernel to import (the flash-attn package's
``flash_attention_2``, else one from the kernels hub), hence ``st_packed_dao``.
"""

from __future__ import annotations

import torch

from st_contrast.attention.backends import ATTENTION_BACKENDS, canonical_backend_name, get_kernel, resolve_backend
from st_contrast.attention.shared_rows import SharedRowsLayout
from st_contrast.compat import register_attention_function

__all__ = [
    "attention_implementation_name",
    "backend_of_implementation",
    "runs_shared_rows",
    "is_packed_implementation",
    "register_packed_attention",
    "packed_attention_forward",
]

_PREFIX = "st_packed_"
_NAMES = {"sdpa": "exact", "flash_attn": "dao"}
"""Backends registered under another suffix (transformers reads "sdpa" and "flash" in a name as requests for its own
implementations)."""


def attention_implementation_name(backend: str) -> str:
    """The transformers ``attn_implementation`` name of an attention backend (registered on demand)."""
    backend = canonical_backend_name(backend)
    register_packed_attention()
    return _PREFIX + _NAMES.get(backend, backend)


def is_packed_implementation(name: str | None) -> bool:
    """Whether a model's ``config._attn_implementation`` is one of st_contrast's packed implementations."""
    return bool(name) and name.startswith(_PREFIX)


def packed_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    sliding_window: int | None = None,
    softcap: float | None = None,
    is_causal: bool | None = None,
    *,
    backend: str = "auto",
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers attention-function signature over the packed kernels.

    ``query`` is ``[batch, heads, seq, dim]`` as transformers passes it. For a packed batch
    (``batch == 1``) the sequence boundaries come from the ``cu_seq_lens_q`` / ``max_length_q``
    kwargs that :class:`transformers.DataCollatorWithFlattening` produces; without them each row is
    one unpadded sequence. Returns ``([batch, seq, heads, dim], None)``.
    """
    if kwargs.get("s_aux") is not None:
        raise NotImplementedError("Packed attention does not support attention sinks (s_aux).")
    if attention_mask is not None:
        raise ValueError(
            "Packed attention received a padded batch with an attention mask. Feed it packed inputs "
            "(a module packed with st_contrast.modules.enable_packing does) or use attn_implementation='sdpa' for "
            "padded batches."
        )
    batch, heads, seq_len, head_dim = query.shape
    cu_seqlens = kwargs.get("cu_seq_lens_q")
    if cu_seqlens is None:
        cu_seqlens = torch.arange(0, (batch + 1) * seq_len, seq_len, dtype=torch.int32, device=query.device)
        max_len = seq_len
    else:
        if batch != 1:
            raise ValueError(f"Packed inputs must have batch size 1, got {batch}.")
        max_len = kwargs.get("max_length_q")
        if max_len is None:
            max_len = int((cu_seqlens[1:] - cu_seqlens[:-1]).max())
        if not isinstance(max_len, torch.SymInt):  # a traced int stays symbolic (one graph for every max_len)
            max_len = int(max_len)

    causal = bool(is_causal if is_causal is not None else getattr(module, "is_causal", False))
    window = None
    if sliding_window is not None:
        window = _window(module, sliding_window, causal)

    query, key, value = _kernel_dtype(query, key, value)

    def packed(t: torch.Tensor) -> torch.Tensor:
        return t.transpose(1, 2).reshape(batch * seq_len, t.shape[1], t.shape[3])

    layout = SharedRowsLayout.from_kwargs(kwargs)
    concrete = _concrete_backend(backend, query.device, query.dtype, softcap is not None, layout is not None)
    extra = {"layout": layout} if concrete == "block_diagonal" and layout is not None else {}
    out = get_kernel(concrete)(
        packed(query),
        packed(key),
        packed(value),
        cu_seqlens,
        max_len,
        causal=causal,
        scale=scaling,
        dropout=dropout,
        window=window,
        softcap=softcap,
        **extra,
    )
    return out.reshape(batch, seq_len, heads, value.shape[-1]), None


def _kernel_dtype(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k and v in the one dtype the kernels take (:func:`kernel_dtype`)."""
    dtype = kernel_dtype(query, value)
    return query.to(dtype), key.to(dtype), value.to(dtype)


def kernel_dtype(query: torch.Tensor, value: torch.Tensor) -> torch.dtype:
    """The dtype packed attention runs in: the autocast dtype when autocast is on, else the value's.

    Under mixed precision (``bf16: true``: fp32 weights, autocast) rotary models (Llama, Qwen, NeoX, NomicBERT...)
    multiply q and k by fp32 ``cos`` / ``sin``, which promotes them to fp32 while v stays bf16; the GPU kernels take
    one half-precision dtype (transformers' flash-attention path casts the same way before its kernel).
    """
    device_type = query.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return value.dtype


def _window(module: torch.nn.Module, sliding_window: int, causal: bool) -> tuple[int, int]:
    """The ``(left, right)`` tokens a query sees, matching transformers' padded (eager / sdpa) masks.

    Causal: ``sliding_window - 1`` tokens back (its mask: ``kv > q - sliding_window``). Gemma3 configured with
    ``use_bidirectional_attention`` (EmbeddingGemma): ``|q - kv| < sliding_window``. Bidirectional otherwise: the padded
    mask is ``|q - kv| <= config.sliding_window``; decoders made bidirectional pass ``config.sliding_window`` as the
    kwarg, ModernBERT passes ``config.sliding_window + 1`` (for flash attention's inclusive bounds), so the half
    window is read from the module's config when it has one. (transformers' own flash_attention_2 path sees one
    token less on each side for the former; the packed kernels agree with the padded paths instead, which is what a
    plain Sentence Transformers model, loaded padded, computes.)
    """
    if causal:
        return (sliding_window - 1, 0)
    config = getattr(module, "config", None)
    if getattr(config, "use_bidirectional_attention", False) and getattr(config, "is_causal", True):
        # Gemma3's own bidirectional mode (EmbeddingGemma): its padded mask is |q - kv| < sliding_window.
        return (sliding_window - 1, sliding_window - 1)
    half = getattr(config, "sliding_window", None)
    half = sliding_window - 1 if half is None else half
    return (half, half)


def _concrete_backend(
    backend: str, device: torch.device, dtype: torch.dtype, softcap: bool, layout_given: bool = False
) -> str:
    """:func:`resolve_backend`, worked out once per compile under ``torch.compile`` (its availability checks, import
    probes and caches stay out of the traced code; the graph is guarded on the device and dtype it was traced for).
    While compiling, the sequence lengths can only be read on the host if a shared-rows layout was handed in
    (``layout_given``). A backend that cannot run here raises its ValueError, compiled or not."""
    lengths_on_host = layout_given or not torch.compiler.is_compiling()
    name, problem = _resolution(backend, device, dtype, softcap, lengths_on_host)
    if problem is not None:
        raise ValueError(problem)
    return name


@torch.compiler.assume_constant_result
def _resolution(
    backend: str, device: torch.device, dtype: torch.dtype, softcap: bool, lengths_on_host: bool
) -> tuple[str, str | None]:
    """``(kernel, None)``, or ``("", why it cannot run)``: a constant for the compiler, which reports an exception
    raised inside a constant-result function as its own internal error."""
    try:
        return resolve_backend(backend, device, dtype, softcap=softcap, lengths_on_host=lengths_on_host), None
    except ValueError as error:
        return "", str(error)


def backend_of_implementation(name: str | None) -> str | None:
    """The attention backend of one of st_contrast's packed implementation names (None for any other name)."""
    if not is_packed_implementation(name):
        return None
    suffix = name.removeprefix(_PREFIX)
    return next((backend for backend, registered in _NAMES.items() if registered == suffix), suffix)


def runs_shared_rows(implementation: str | None, device: torch.device, dtype: torch.dtype) -> bool:
    """Whether a model with this attention implementation runs the ``block_diagonal`` kernel on tensors of ``device``
    and ``dtype`` (autocast's dtype where autocast is on), i.e. whether a compiled backbone should hand it a
    :class:`~st_contrast.attention.shared_rows.SharedRowsLayout` (:func:`~st_contrast.modules.compile_backbone`)."""
    backend = backend_of_implementation(implementation)
    if backend is None:
        return False
    if torch.is_autocast_enabled(device.type):
        dtype = torch.get_autocast_dtype(device.type)
    name, problem = _resolution(backend, device, dtype, False, True)
    return problem is None and name == "block_diagonal"


_outside_compiled_graphs = torch.compiler.disable(packed_attention_forward)
"""The flash-attn package's kernel, and ``block_diagonal`` where no layout was handed in (it then reads the sequence
lengths on the host), under ``torch.compile``: a graph break, the kernel runs eagerly and the rest is compiled. The
``varlen`` (torch's custom op, with its own shape function and backward), ``sdpa`` and, given its layout,
``block_diagonal`` kernels are traced into the graph: one graph for the whole backbone."""


def _runs_between_graphs(backend: str, query: torch.Tensor, value: torch.Tensor, kwargs: dict) -> bool:
    """Whether this attention call, being compiled, resolves to a kernel that runs between the compiled graphs; logit
    soft-capping only steers ``auto`` away from ``varlen``, so it does not change the answer."""
    layout_given = SharedRowsLayout.from_kwargs(kwargs) is not None
    name = _concrete_backend(backend, query.device, kernel_dtype(query, value), False, layout_given)
    return name == "flash_attn" or (name == "block_diagonal" and not layout_given)


_registered = False


def register_packed_attention() -> None:
    """Register the implementation of every backend (see :func:`attention_implementation_name`) (idempotent).

    The mask interface reuses transformers' flash-attention mask builder: it returns None for
    unpadded inputs and the 2-D padding mask otherwise, so a padded batch is refused loudly
    instead of being attended across its padding.
    """
    global _registered
    if _registered:
        return
    for backend in ATTENTION_BACKENDS:

        def forward(module, query, key, value, *args, _backend: str = backend, **kwargs):
            if torch.compiler.is_compiling() and _runs_between_graphs(_backend, query, value, kwargs):
                return _outside_compiled_graphs(module, query, key, value, *args, backend=_backend, **kwargs)
            return packed_attention_forward(module, query, key, value, *args, backend=_backend, **kwargs)

        register_attention_function(_PREFIX + _NAMES.get(backend, backend), forward)
    _registered = True
