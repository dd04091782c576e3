"""Models for masked pretraining: a bidirectional causal LM for MNTP, a masked LM for encoders."""

from __future__ import annotations

from typing import Any

from peft import LoraConfig
from transformers import (
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from st_contrast.adapters import add_lora
from st_contrast.attention.interface import attention_implementation_name, is_packed_implementation
from st_contrast.compat import attn_implementation, model_position_offset
from st_contrast.modules.architectures import model_type_of, packed_refusal
from st_contrast.modules.bidirectional import set_causal
from st_contrast.modules.embedding_tokenizer import pad_with_eos
from st_contrast.pretraining.masking import set_mask_token

__all__ = ["is_packed_model", "load_mlm_model", "load_mntp_model", "packed_position_offset"]


def _maybe_lora(model: PreTrainedModel, lora: dict[str, Any] | LoraConfig | None, preset: str) -> None:
    if lora is None:
        return
    if isinstance(lora, LoraConfig):
        add_lora(model, lora)
    else:
        add_lora(model, lora.get("preset", preset), **{k: v for k, v in lora.items() if k != "preset"})


def load_mntp_model(
    model_name_or_path: str,
    *,
    mask_token: str = "_",
    lora: dict[str, Any] | LoraConfig | None = None,
    model_kwargs: dict[str, Any] | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A decoder's causal LM, made bidirectional, ready for MNTP with :class:`MaskingCollator` (``shifted=True``).

    Its own loss (labels shifted by one) is the MNTP loss: cross-entropy of the token at ``i`` given the
    logits at ``i - 1``, over the masked positions.

    Args:
        model_name_or_path: Decoder id or path.
        mask_token: See :func:`set_mask_token`.
        lora: ``None`` for full training, ``{"r": 16, "alpha": 32, "dropout": 0.05}`` (an optional
            ``"preset"``, default ``"decoder"``) or a ``peft.LoraConfig``.
        model_kwargs: Passed to ``AutoModelForCausalLM.from_pretrained`` (``attn_implementation``, ``dtype``...).
    """
    tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
    model = AutoModelForCausalLM.from_pretrained(model_name_or_path, **(model_kwargs or {}))
    pad_with_eos(tokenizer)
    set_mask_token(tokenizer, mask_token, model)
    set_causal(model, False)
    _maybe_lora(model, lora, "decoder")
    return model, tokenizer


def load_mlm_model(
    model_name_or_path: str,
    *,
    lora: dict[str, Any] | LoraConfig | None = None,
    model_kwargs: dict[str, Any] | None = None,
    packed: bool = False,
    attention_backend: str = "auto",
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """An encoder's masked LM (BERT, RoBERTa, ModernBERT...) for MLM pretraining (contrastors / kl3m style).

    Args:
        model_name_or_path: Encoder id or path (its tokenizer must have a mask token).
        lora: As for :func:`load_mntp_model` (default preset ``"auto"``).
        model_kwargs: Passed to ``AutoModelForMaskedLM.from_pretrained``.
        packed: Run attention packed (padding-free, as contrastors pretrains): the model gets st_contrast's packed
            attention implementation and :func:`train_masked_lm` packs its batches; the loss is the padded one.
            Architectures that cannot run packed are refused with the reason.
        attention_backend: The packed kernel (``"auto"``, ``"varlen"``, ``"flash_attn"``, ``"sdpa"``,
            ``"block_diagonal"``).

    Example:
        ::

            from st_contrast.pretraining import load_mlm_model

            model, tokenizer = load_mlm_model("nomic-ai/nomic-bert-2048", packed=True)
    """
    tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
    if tokenizer.mask_token is None:
        raise ValueError(f"{model_name_or_path} has no mask token; MLM needs one (decoders: use MNTP instead).")
    model = AutoModelForMaskedLM.from_pretrained(model_name_or_path, **(model_kwargs or {}))
    if packed:
        if reason := packed_refusal(model_type_of(model.config)):
            raise ValueError(f"Cannot pretrain {model_name_or_path} packed: {reason}.")
        model.set_attn_implementation(attention_implementation_name(attention_backend))
    _maybe_lora(model, lora, "auto")
    return model, tokenizer


def is_packed_model(model: PreTrainedModel) -> bool:
    """Whether ``model`` runs st_contrast's packed attention (:func:`load_mlm_model` with ``packed=True``).

    Args:
        model: A transformers model.

    Example:
        ::

            model, tokenizer = load_mlm_model("bert-base-uncased", packed=True)
            assert is_packed_model(model)
    """
    return is_packed_implementation(attn_implementation(model.config))


def packed_position_offset(model: PreTrainedModel) -> int:
    """The offset packed ``position_ids`` need for ``model``: ``padding_idx + 1`` for RoBERTa-family learned position
    tables, else 0 (what Sentence Transformers adds on its own flattened path).

    Args:
        model: A transformers model (any head).

    Example:
        ::

            offset = packed_position_offset(model)  # 2 for RoBERTa (padding_idx 1), 0 for BERT
            collator = MaskingCollator(tokenizer, shifted=False, packed=True, position_offset=offset)
    """
    return model_position_offset(model)
