"""``torch.compile`` for packed backbones, with one set of graphs for every batch shape.

A packed batch is one run of ``total_tokens`` tokens whose length, number of sequences and longest sequence change at
every step. Compiled naively, each new shape would recompile (and torch gives up after a few recompiles, silently
running eager). Here the backbone's transformers model is compiled with dynamic shapes (``dynamic=True``: the token
and sequence counts and ``max_len`` are symbolic from the first compile). The attention kernels are traced into the
graph: the exact ones (``block_diagonal``, ``auto``'s choice on CPU and in fp32: its shared-rows layout is worked out
before the graph and handed in, its rows and width dynamic sizes; ``sdpa``: its padded layout's shapes follow
``max_len`` and the token count, no data-dependent shape) and torch's GPU kernel (``varlen``: a custom op with its own
shape function and backward), so the whole backbone is one graph. Only the flash-attn package's kernel
(``flash_attn``) runs between graphs (a graph break per attention layer; the projections, MLPs, norms and embeddings
around it are still fused). One compile serves every
batch; a mode change (training, evaluation, ``inference_mode``) compiles once more.

CUDA graphs (``mode="reduce-overhead"`` or ``"max-autotune"``) record a graph per concrete shape: there, on a GPU, the
packed inputs are padded to a few shapes first (:mod:`st_contrast.modules.shape_buckets`), so that the recorded graphs
replay for later batches; ``bucket_shapes`` turns this on or off explicitly.

The model compiles once per device type it runs on. On CPU, inductor draws dropout masks with torch's own random
kernels (``fallback_random``) rather than generating them in its fused loops: its per-element generator is several
times slower than the vectorized one on CPU (on GPU it is fast, and the default stays).
"""

from __future__ import annotations

from typing import Any

import torch
from sentence_transformers.base.modules import Transformer

from st_contrast.attention.interface import is_packed_implementation, runs_shared_rows
from st_contrast.attention.shared_rows import SharedRowsLayout
from st_contrast.compat import attn_implementation
from st_contrast.modules.shape_buckets import cut_packed_outputs, pad_packed_inputs

__all__ = ["compile_backbone", "is_compiled", "uncompile_backbone"]

_COMPILED = "_st_contrast_compiled"
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")
"""``torch.compile`` modes that record CUDA graphs (on a GPU)."""


def compile_backbone(module: Transformer, bucket_shapes: bool | None = None, **options: Any) -> Transformer:
    """Compile the transformers model inside a packed ``Transformer`` module, in place.

    Nothing of it is saved: ``model.save`` writes the same plain Sentence Transformers model, and
    :func:`uncompile_backbone` (or :func:`~st_contrast.modules.disable_packing`) restores the eager forward.
    Apply adapters (LoRA, BitFit) before compiling.

    Args:
        module: A ``Transformer`` module packed with :func:`~st_contrast.modules.enable_packing`.
        bucket_shapes: Pad each packed batch to one of a few shapes (:mod:`~st_contrast.modules.shape_buckets`) before
            the compiled model runs. Default (None): on a GPU with a CUDA-graph ``mode`` (``"reduce-overhead"``,
            ``"max-autotune"``), whose graphs replay only for shapes they were recorded for; True: on any device.
        **options: ``torch.compile`` arguments (``backend``, ``mode``, ``fullgraph``...); ``dynamic`` defaults to
            True (one compile for every packed shape).

    Returns:
        ``module``.
    """
    if not is_packed_implementation(attn_implementation(module.model.config)):
        raise ValueError(
            "compile_backbone compiles packed backbones (their shapes are made dynamic); pack the module first "
            "(FlashTransformer(..., compile=True) or enable_packing(module, compile=True)), or torch.compile a padded "
            "model yourself."
        )
    options.setdefault("dynamic", True)
    inner = module.model
    if getattr(inner, _COMPILED, None) is not None:
        uncompile_backbone(module)
    forward = type(inner).forward.__get__(inner)
    if not _reads_pooler_output(module):
        forward = _with_pooler_output_detached(forward)
    inner.forward = _compiled_per_device_type(inner, forward, options, bucket_shapes)
    setattr(inner, _COMPILED, options)
    return module


def _compiled_per_device_type(model: torch.nn.Module, forward, options: dict[str, Any], bucket_shapes: bool | None):
    """``forward`` compiled with the options of the device type that holds ``model``'s weights when it runs, its
    packed inputs padded to a bucketed shape where ``bucket_shapes`` asks for it (see :func:`compile_backbone`).

    Both compiled callables exist from the start (``torch.compile`` compiles lazily, on a callable's first call), so a
    trainer that traces the whole model meets no ``torch.compile`` call inside its trace.
    """
    on_cpu = torch.compile(forward, **_device_compile_options(options, "cpu"))
    elsewhere = torch.compile(forward, **options)
    graphs = options.get("mode") in CUDA_GRAPH_MODES

    def run(*args, **kwargs):
        parameter = next(model.parameters())
        compiled = on_cpu if parameter.device.type == "cpu" else elsewhere
        bucket = bucket_shapes if bucket_shapes is not None else graphs and parameter.device.type == "cuda"
        inputs, tokens = pad_packed_inputs(kwargs) if bucket and not args else (kwargs, None)
        if tokens is None:
            return compiled(*args, **_with_shared_rows(model, parameter, kwargs))
        return cut_packed_outputs(compiled(**inputs), tokens, inputs["input_ids"].shape[1])

    return run


def _with_shared_rows(model: torch.nn.Module, parameter: torch.Tensor, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with the :class:`~st_contrast.attention.shared_rows.SharedRowsLayout` of their packed batch where the
    model runs the ``block_diagonal`` kernel: worked out here, before the graph, from the host's view of
    ``cu_seq_lens_q``, so the kernel is traced into the graph (its rows and width are dynamic sizes). Bucketed shapes
    (CUDA graphs) go without it: the rows would change the shapes the buckets fix."""
    cu_seqlens = kwargs.get("cu_seq_lens_q")
    if cu_seqlens is None or not runs_shared_rows(attn_implementation(model.config), parameter.device, parameter.dtype):
        return kwargs
    return {**kwargs, **SharedRowsLayout.from_cu_seqlens(cu_seqlens).as_kwargs()}


def _device_compile_options(options: dict[str, Any], device_type: str) -> dict[str, Any]:
    """``torch.compile`` arguments for one device type: on CPU, inductor's ``fallback_random`` unless set.

    ``mode`` becomes the inductor options it stands for (``torch.compile`` takes one or the other), so a mode and
    the CPU setting combine. Other backends than inductor get ``options`` unchanged.
    """
    if device_type != "cpu" or options.get("backend", "inductor") != "inductor":
        return options
    from torch._inductor import list_mode_options

    options = dict(options)
    mode = options.pop("mode", None)
    inductor = dict(list_mode_options(mode, options.get("dynamic")) if mode else {})
    inductor.update(options.get("options") or {})
    inductor.setdefault("fallback_random", True)
    return {**options, "options": inductor}


def _reads_pooler_output(module: Transformer) -> bool:
    """Whether the module embeds with the model's ``pooler_output`` (CLIP-style towers) rather than its tokens."""
    names = [config.get("method_output_name") for config in getattr(module, "modality_config", {}).values()]
    return any("pooler_output" in ((name,) if isinstance(name, str) else tuple(name or ())) for name in names)


def _with_pooler_output_detached(forward):
    """``forward`` with its ``pooler_output`` (BERT's pooler, which Sentence Transformers does not read) detached.

    In one compiled graph an unread differentiable output gets a zero gradient, so the pooler's parameters would get
    zero gradients (and weight decay) where eager training leaves them without any.
    """

    def run(*args, **kwargs):
        output = forward(*args, **kwargs)
        pooled = output.get("pooler_output") if hasattr(output, "get") else None
        if pooled is not None:
            output["pooler_output"] = pooled.detach()
        return output

    return run


def uncompile_backbone(module: Transformer) -> Transformer:
    """Run the module's transformers model eagerly again (undoes :func:`compile_backbone`)."""
    inner = module.model
    if getattr(inner, _COMPILED, None) is not None:
        del inner.forward  # the instance attribute set by compile_backbone; the class's forward shows again
        delattr(inner, _COMPILED)
    return module


def is_compiled(module: Transformer) -> bool:
    """Whether :func:`compile_backbone` compiled this module's transformers model."""
    return getattr(getattr(module, "model", None), _COMPILED, None) is not None
