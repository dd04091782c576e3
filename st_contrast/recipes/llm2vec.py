"""LLM2Vec recipe helpers: the embedding model of each stage, built from ST and st_contrast modules."""

from __future__ import annotations

from typing import Any

from sentence_transformers import SentenceTransformer

from st_contrast.adapters import add_lora
from st_contrast.modules.bidirectional import BidirectionalTransformer
from st_contrast.modules.compilation import compile_backbone
from st_contrast.modules.instruction_pooling import InstructionPooling
from st_contrast.modules.packing import enable_packing

__all__ = ["llm2vec_model"]


def llm2vec_model(
    model_name_or_path: str,
    *,
    pooling_mode: str = "mean",
    packed: bool = False,
    attention_backend: str = "auto",
    attention_dropout: float | None = None,
    lora: dict[str, Any] | None = None,
    max_seq_length: int | None = None,
    device: str | None = None,
    compile: bool | dict[str, Any] = False,
    **backbone_kwargs: Any,
) -> SentenceTransformer:
    """A bidirectional decoder embedding model: LLM2Vec's SimCSE and supervised stages start from it.

    ``model_name_or_path`` is the base decoder or the merged output of the MNTP stage
    (:func:`st_contrast.pretraining.save_pretrained_model`). The model is
    ``[BidirectionalTransformer | BidirectionalFlashTransformer, InstructionPooling]``: instructions given
    as ``prompt`` are left out of the pooled tokens, and EOS is appended after truncation.

    Args:
        model_name_or_path: Decoder id or path.
        pooling_mode: ``"mean"`` (LLM2Vec's best), ``"weightedmean"``, ``"lasttoken"``, ...
        packed: Run packed (:func:`~st_contrast.modules.enable_packing`); padded (default) uses the transformers
            attention that ``model_kwargs`` picks (eager / sdpa / flash_attention_2).
        attention_backend: The packed attention backend (``"auto"``, ``"varlen"``, ``"flash_attn"``, ``"sdpa"``,
            ``"block_diagonal"``).
        attention_dropout: Overrides the config's attention dropout: LLM2Vec's unsupervised SimCSE stage
            uses it as the dropout noise (0.3 in the paper), as decoders like Llama have no other dropout.
        lora: ``{"r": 16, "alpha": 32, "dropout": 0.05}`` adds a LoRA adapter (preset ``"decoder"``).
        max_seq_length: Truncation length (EOS included).
        device: Passed to ``SentenceTransformer``.
        compile: ``torch.compile`` the packed backbone after the LoRA adapter is added
            (:func:`~st_contrast.modules.compile_backbone`; a dict gives its arguments). Needs ``packed=True``.
        **backbone_kwargs: Passed to the backbone (``append_eos``, ``sgpt_brackets``, ``model_kwargs``...).
    """
    if compile and not packed:
        raise ValueError("llm2vec_model(compile=...) compiles the packed backbone: pass packed=True as well.")
    if attention_dropout is not None:
        config_kwargs = dict(backbone_kwargs.pop("config_kwargs", None) or {})
        config_kwargs["attention_dropout"] = attention_dropout
        backbone_kwargs["config_kwargs"] = config_kwargs
    if max_seq_length is not None:
        backbone_kwargs["max_seq_length"] = max_seq_length
    backbone = BidirectionalTransformer(model_name_or_path, **backbone_kwargs)
    if packed:
        enable_packing(backbone, attention_backend)
    pooling = InstructionPooling(backbone.get_embedding_dimension(), pooling_mode)
    model = SentenceTransformer(modules=[backbone, pooling], device=device)
    if lora:
        add_lora(model, lora.get("preset", "decoder"), **{k: v for k, v in lora.items() if k != "preset"})
    if compile:
        compile_backbone(backbone, **(compile if isinstance(compile, dict) else {}))
    return model
