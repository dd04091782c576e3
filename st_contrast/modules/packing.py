"""Packed (padding-free) execution as a run-time mode of Sentence Transformers' own ``Transformer`` module.

A packed module tokenizes without padding, flattens each batch into one run of real tokens with ``cu_seqlens`` and
per-sequence ``position_ids`` (Sentence Transformers' own flattening path), and runs attention through one of
st_contrast's varlen kernels. Nothing of this is saved: the module stays a stock ``Transformer``, so
``model.save(dir)`` writes what plain ``SentenceTransformer(dir)`` loads (padded, the model's usual attention), and
:func:`st_contrast.load_model` packs it again.
"""

from __future__ import annotations

import logging
from typing import Any

from sentence_transformers.base.modules import Transformer

from st_contrast.attention.backends import canonical_backend_name, resolve_backend
from st_contrast.attention.interface import attention_implementation_name
from st_contrast.compat import (
    attn_implementation,
    flatten_inputs,
    flattens_inputs,
    forward_params,
    restore_padded_inputs,
)
from st_contrast.modules.architectures import ARCHITECTURES, model_type_of, packed_refusal
from st_contrast.modules.compilation import compile_backbone, uncompile_backbone
from st_contrast.modules.packed_collator import PackedTextCollator
from st_contrast.modules.packed_outputs import padded_outputs_hook

__all__ = [
    "SUPPORTED_MODEL_TYPES",
    "attention_backend",
    "can_pack",
    "disable_packing",
    "enable_packing",
    "is_packed",
    "packing_refusal",
    "resolved_attention_backend",
    "set_attention_backend",
]

logger = logging.getLogger(__name__)

SUPPORTED_MODEL_TYPES = tuple(model_type for model_type, entry in ARCHITECTURES.items() if entry.packed_refusal is None)
"""Architectures whose attention goes through transformers' AttentionInterface *and* whose embeddings honour packed
``position_ids`` (:data:`~st_contrast.modules.architectures.ARCHITECTURES`); each one is covered by the parity tests
against stock padded Sentence Transformers."""

_PACKED_FORWARD_KWARGS = frozenset(
    {"position_ids", "cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k", "seq_idx"}
)
_STATE = "_st_contrast_packing"
_HOOKED = "_st_contrast_padded_outputs_hook"


def packing_refusal(module: Any) -> str | None:
    """Why ``module`` cannot run packed, or None when it can."""
    if not isinstance(module, Transformer):
        return f"{type(module).__name__} is not a sentence_transformers Transformer module"
    if module.backend != "torch":
        return f"packing runs on the 'torch' backend only, not {module.backend!r}"
    if reason := packed_refusal(model_type_of(module.model.config)):
        return reason
    if module.transformer_task not in ("feature-extraction", "fill-mask") or "text" not in module.modality_config:
        return (
            "packing covers text for the 'feature-extraction' and 'fill-mask' tasks only, got "
            f"transformer_task={module.transformer_task!r} with modalities {list(module.modality_config)}"
        )
    if any(params["method"] != "forward" for params in module.modality_config.values()):
        return "packing needs a modality_config whose methods are all 'forward'"
    return None


def can_pack(module: Any) -> bool:
    """Whether :func:`enable_packing` accepts ``module``."""
    return packing_refusal(module) is None


def enable_packing(
    module: Transformer, attention_backend: str = "auto", compile: bool | dict[str, Any] = False
) -> Transformer:
    """Make a Sentence Transformers ``Transformer`` run packed, in place; the module's class does not change.

    Args:
        module: A ``Transformer`` (or subclass) whose architecture is in :data:`SUPPORTED_MODEL_TYPES`.
        attention_backend: ``"auto"`` (``flash_attn``, then PyTorch's ``varlen`` for fp16/bf16 CUDA tensors, else
            ``"block_diagonal"``, ``"sdpa"`` while compiling), ``"varlen"``, ``"flash_attn"``, ``"sdpa"`` (exact
            masked SDPA over the regrouped sequences, any device and dtype; ``"cpu"`` is accepted as its former name)
            or ``"block_diagonal"`` (exact, several sequences per regrouped row).
        compile: ``torch.compile`` the packed model with dynamic shapes (one compile for every batch shape; see
            :func:`~st_contrast.modules.compile_backbone`); a dict gives ``torch.compile`` arguments.

    Returns:
        ``module``.
    """
    backend = canonical_backend_name(attention_backend)
    if reason := packing_refusal(module):
        raise ValueError(f"Cannot pack this module: {reason}.")
    state = getattr(module, _STATE, None)
    if state is None:
        state = {
            "padded_attn_implementation": attn_implementation(module.model.config),
            "forward_params": forward_params(module),
        }
        setattr(module, _STATE, state)
    collator = PackedTextCollator(return_seq_idx=True, return_flash_attn_kwargs=True, return_position_ids=True)
    flatten_inputs(module, collator, _PACKED_FORWARD_KWARGS)  # Sentence Transformers' own flattened text path
    if not getattr(module, _HOOKED, False):  # encode() gets the padded layout it reads (packed_outputs)
        module.register_forward_hook(padded_outputs_hook)
        setattr(module, _HOOKED, True)
    set_attention_backend(module, backend)
    if compile:
        compile_backbone(module, **(compile if isinstance(compile, dict) else {}))
    return module


def disable_packing(module: Transformer) -> Transformer:
    """Undo :func:`enable_packing`: padded batches and the attention implementation the module had before."""
    state = getattr(module, _STATE, None)
    if state is None:
        return module
    uncompile_backbone(module)
    module.model.set_attn_implementation(state["padded_attn_implementation"])
    delattr(module, _STATE)
    restore_padded_inputs(module, state["forward_params"])  # ST re-evaluates its own flattening conditions
    return module


def is_packed(module: Any) -> bool:
    """Whether ``module`` is a ``Transformer`` running packed (see :func:`enable_packing`)."""
    return isinstance(module, Transformer) and getattr(module, _STATE, None) is not None and flattens_inputs(module)


def attention_backend(module: Transformer) -> str | None:
    """The packed attention backend requested for ``module`` (``"auto"``, ...), or None when it is padded."""
    state = getattr(module, _STATE, None)
    return None if state is None else state["backend"]


def set_attention_backend(module: Transformer, backend: str) -> None:
    """Choose the packed kernel of a packed module (see :func:`enable_packing` for the names)."""
    state = getattr(module, _STATE, None)
    if state is None:
        raise ValueError("The module is not packed: call st_contrast.modules.enable_packing(module, backend) first.")
    backend = canonical_backend_name(backend)
    module.model.set_attn_implementation(attention_implementation_name(backend))
    state["backend"] = backend
    logger.info("packed attention backend %r (%s)", backend, describe_resolution(module))


def resolved_attention_backend(module: Transformer) -> str:
    """The concrete kernel a packed module runs on its current device and dtype."""
    parameter = next(module.model.parameters())
    softcap = getattr(module.model.config, "attn_logit_softcapping", None) is not None
    return resolve_backend(attention_backend(module) or "auto", parameter.device, parameter.dtype, softcap=softcap)


def describe_resolution(module: Transformer) -> str:
    """``resolved_attention_backend='...'`` for the module's device and dtype, or why it cannot run there."""
    try:
        return f"resolved_attention_backend={resolved_attention_backend(module)!r}"
    except ValueError as error:
        return f"unavailable here: {error}"
