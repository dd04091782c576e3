"""A padding-free drop-in replacement for Sentence Transformers' ``Transformer`` module."""

from __future__ import annotations

import logging
from typing import Any

import torch
from sentence_transformers.base.modules import Transformer
from transformers import DataCollatorWithFlattening

from st_contrast.attention.backends import check_backend_name, resolve_backend
from st_contrast.attention.interface import attention_implementation_name

__all__ = ["FlashTransformer", "SUPPORTED_MODEL_TYPES"]

logger = logging.getLogger(__name__)

# Architectures whose attention goes through transformers' AttentionInterface *and* whose
# embeddings honour packed ``position_ids``; each one is covered by the parity tests.
SUPPORTED_MODEL_TYPES = (
    "bert",
    "roberta",
    "xlm-roberta",
    "modernbert",
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma",
)

_PACKED_KWARGS = {"position_ids", "cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k", "seq_idx"}


class FlashTransformer(Transformer):
    """Sentence Transformers' :class:`~sentence_transformers.base.modules.Transformer`, always packed.

    Every text batch is tokenized without padding and flattened to one run of ``total_tokens``
    tokens with ``cu_seqlens`` and per-sequence ``position_ids`` (RoBERTa-family offsets included),
    so embeddings, projections and MLPs never compute on padding. Attention runs through a
    registered transformers attention function that confines each token to its own sequence, on
    one of these backends:

    - ``"varlen"``: PyTorch's built-in flash kernel ``torch.nn.attention.varlen.varlen_attn``
      (CUDA, fp16/bf16; no ``flash-attn`` compile needed).
    - ``"flash_attn"``: ``flash_attn_varlen_func`` from the ``flash-attn`` package.
    - ``"cpu"``: exact masked SDPA over the regrouped sequences, on any device and dtype.
    - ``"auto"`` (default): ``flash_attn``, then ``varlen`` for fp16/bf16 CUDA tensors, else
      ``cpu``; chosen per call, so one saved model runs on a laptop and on a GPU.

    The token embeddings it outputs are packed (``[1, total_tokens, hidden]`` with
    ``cu_seq_lens_q`` in the features), which Sentence Transformers'
    :class:`~sentence_transformers.sentence_transformer.modules.Pooling` reduces directly in every
    pooling mode. The backend is saved in ``sentence_bert_config.json`` and restored on load.

    Args:
        model_name_or_path: Hugging Face model id or local directory, as for ``Transformer``.
        attention_backend: One of ``"auto"``, ``"varlen"``, ``"flash_attn"``, ``"cpu"``.
        **kwargs: Every other ``Transformer`` argument (``model_kwargs``, ``processor_kwargs``,
            ``max_seq_length``, ...). ``unpad_inputs=False`` is refused: packing is the point.

    Example:
        ::

            from sentence_transformers import SentenceTransformer
            from sentence_transformers.sentence_transformer.modules import Pooling
            from st_contrast.modules import FlashTransformer

            backbone = FlashTransformer("sentence-transformers/all-MiniLM-L6-v2", max_seq_length=256)
            pooling = Pooling(backbone.get_embedding_dimension(), pooling_mode="mean")
            model = SentenceTransformer(modules=[backbone, pooling])
            embeddings = model.encode(["A short one.", "A somewhat longer sentence than the first."])

    Reloading a saved model: modules outside the ``sentence_transformers`` namespace need
    ``trust_remote_code=True`` in ST 6, which would also trust a backbone's remote code. Use
    :func:`st_contrast.load_model` instead, which resolves only ``st_contrast``'s own module
    classes and keeps ``trust_remote_code=False`` for everything else.
    """

    config_keys: list[str] = [*Transformer.config_keys, "attention_backend"]

    def __init__(self, model_name_or_path: str, *, attention_backend: str = "auto", **kwargs: Any) -> None:
        check_backend_name(attention_backend)
        if kwargs.get("unpad_inputs") is False:
            raise ValueError(
                "FlashTransformer always packs its inputs (unpad_inputs=False was given). Use "
                "sentence_transformers' Transformer module for a padded backbone."
            )
        if kwargs.get("backend", "torch") != "torch":
            raise ValueError(f"FlashTransformer runs on the 'torch' backend only, not {kwargs['backend']!r}.")
        kwargs["unpad_inputs"] = True
        super().__init__(model_name_or_path, **kwargs)
        _check_model_type(self.model)
        self.attention_backend = attention_backend

    @classmethod
    def from_transformer(cls, module: Transformer, attention_backend: str = "auto") -> FlashTransformer:
        """Turn a loaded stock ``Transformer`` into a ``FlashTransformer`` in place, keeping every weight and setting.

        The module object itself changes class (no copy, no disk round trip), so this also works after
        ``torch.distributed`` is initialised, where transformers writes checkpoints on rank 0 only.
        """
        check_backend_name(attention_backend)
        if module.backend != "torch":
            raise ValueError(f"FlashTransformer runs on the 'torch' backend only, not {module.backend!r}.")
        _check_model_type(module.model)
        module.__class__ = cls
        module.unpad_inputs = True  # the setter runs this class's _can_flatten_inputs
        module.attention_backend = attention_backend
        return module

    @property
    def attention_backend(self) -> str:
        """The requested backend (``"auto"``, ``"varlen"``, ``"flash_attn"`` or ``"cpu"``); assignable."""
        return self._attention_backend

    @attention_backend.setter
    def attention_backend(self, backend: str) -> None:
        check_backend_name(backend)
        self.model.set_attn_implementation(attention_implementation_name(backend))
        self._attention_backend = backend
        logger.info("FlashTransformer: attention backend %r, %s", backend, self._describe_resolution())

    @property
    def resolved_attention_backend(self) -> str:
        """The concrete backend that runs for the module's current device and dtype."""
        device, dtype = self._device_and_dtype()
        return resolve_backend(self._attention_backend, device, dtype)

    def _device_and_dtype(self) -> tuple[torch.device, torch.dtype]:
        parameter = next(self.model.parameters())
        return parameter.device, parameter.dtype

    def _can_flatten_inputs(self) -> bool:
        """Set up packing unconditionally (the base class only packs when ``flash_attn`` imports)."""
        if self.transformer_task not in ("feature-extraction", "fill-mask") or "text" not in self.modality_config:
            raise ValueError(
                "FlashTransformer packs text for the 'feature-extraction' and 'fill-mask' tasks only, "
                f"got transformer_task={self.transformer_task!r} with modalities {list(self.modality_config)}."
            )
        if any(params["method"] != "forward" for params in self.modality_config.values()):
            raise ValueError("FlashTransformer needs a modality_config whose methods are all 'forward'.")
        self.data_collator = DataCollatorWithFlattening(
            return_seq_idx=True, return_flash_attn_kwargs=True, return_position_ids=True
        )
        if self.model_forward_params is not None:
            self.model_forward_params |= _PACKED_KWARGS
        self._flatten_position_offset = self._infer_flatten_position_offset()
        return True

    def _describe_resolution(self) -> str:
        """``resolved_attention_backend='...'`` for the current device/dtype, or why it cannot run."""
        try:
            return f"resolved_attention_backend={self.resolved_attention_backend!r}"
        except ValueError as error:
            return f"unavailable here: {error}"

    def __repr__(self) -> str:
        config = dict(self.get_config_dict(), architecture=self.model.__class__.__name__)
        return f"FlashTransformer({config}, {self._describe_resolution()})"


def _check_model_type(model: torch.nn.Module) -> None:
    model_type = getattr(model.config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"FlashTransformer does not support model_type {model_type!r}. Supported: "
            f"{', '.join(SUPPORTED_MODEL_TYPES)}. Use sentence_transformers' Transformer for other architectures."
        )
