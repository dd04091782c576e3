"""Masking collators: MLM for encoders, masked next-token prediction (MNTP) for decoders."""

from __future__ import annotations

from typing import Any

import torch
from transformers import DataCollatorForLanguageModeling, PreTrainedModel, PreTrainedTokenizerBase

from st_contrast.attention.packing import cu_seqlens_from_lengths, packed_position_ids

__all__ = ["MASK_SCHEMES", "MaskingCollator", "pack_masked_batch", "set_mask_token"]

MASK_SCHEMES: dict[str, tuple[float, float]] = {"bert": (0.8, 0.1), "all_mask": (1.0, 0.0)}
"""``scheme -> (mask_replace_prob, random_replace_prob)``: BERT's 80/10/10, or every selected token masked."""


def set_mask_token(tokenizer: PreTrainedTokenizerBase, mask_token: str, model: PreTrainedModel | None = None) -> int:
    """Give ``tokenizer`` the mask token MNTP/MLM replaces selected tokens with; returns its id.

    Args:
        tokenizer: The tokenizer; its ``mask_token`` is set (saved with it).
        mask_token: ``"_"`` (LLM2Vec's choice for Llama/Mistral: an ordinary vocabulary token), ``"eos"``
            (the EOS token), ``"<mask>"`` (added as a special token if missing: the model's embeddings grow by
            one row, so pass ``model``), or any single token of the vocabulary.
        model: Resized when a new token is added.
    """
    if mask_token == "eos":
        if tokenizer.eos_token is None:
            raise ValueError("mask_token='eos' but the tokenizer has no EOS token; use '_' or '<mask>'.")
        mask_token = tokenizer.eos_token
    vocabulary = tokenizer.get_vocab()
    if mask_token not in vocabulary:
        if mask_token != "<mask>":
            raise ValueError(
                f"mask_token={mask_token!r} is not a token of the vocabulary; use '_', 'eos', '<mask>' (added as a new "
                "special token) or another single token the tokenizer has."
            )
        if model is None:
            raise ValueError("Adding '<mask>' to the vocabulary resizes the embeddings: pass the model too.")
        tokenizer.add_special_tokens({"mask_token": mask_token})
        model.resize_token_embeddings(len(tokenizer))
    tokenizer.mask_token = mask_token
    return tokenizer.convert_tokens_to_ids(mask_token)


class MaskingCollator(DataCollatorForLanguageModeling):
    """transformers' MLM collator with a masking scheme and, for MNTP, the first position never masked.

    Selected tokens (probability ``mlm_probability``; special and padding tokens never) get label = their
    id, every other label is -100. With ``scheme="bert"`` 80% of them become the mask token, 10% a random
    token and 10% stay; with ``"all_mask"`` all become the mask token. ``shifted=True`` is MNTP
    (BehnamGhader et al., 2024): the model is a bidirectional decoder whose causal-LM loss predicts the
    token at ``i`` from the logits at ``i - 1``, so position 0, which has no ``i - 1``, is never selected.

    ``packed=True`` (MLM only) masks exactly as the padded batch would, then drops the padding: one row of
    ``input_ids`` / ``labels`` with ``position_ids`` restarting per sequence (plus ``position_offset``, RoBERTa's
    ``padding_idx + 1``) and the ``cu_seq_lens_q/k`` / ``max_length_q/k`` that st_contrast's packed attention
    reads, so the loss equals the padded batch's (:func:`~st_contrast.pretraining.load_mlm_model` with
    ``packed=True``).

    Args:
        tokenizer: Tokenizer with a ``mask_token`` (see :func:`set_mask_token`) and a pad token.
        mlm_probability: Fraction of tokens selected (LLM2Vec MNTP: 0.2; encoder MLM: 0.3).
        scheme: ``"bert"`` (80/10/10) or ``"all_mask"``.
        shifted: MNTP (``True``) or MLM (``False``).
        packed: Emit packed batches (MLM only).
        position_offset: Added to the packed ``position_ids`` (see
            :func:`~st_contrast.pretraining.packed_position_offset`).
        **kwargs: ``pad_to_multiple_of``, ``seed``.

    Example:
        ::

            from st_contrast.pretraining import MaskingCollator, load_mlm_model

            model, tokenizer = load_mlm_model("answerdotai/ModernBERT-base", packed=True)
            collator = MaskingCollator(tokenizer, mlm_probability=0.3, shifted=False, packed=True)
            loss = model(**collator([tokenizer("A man plays a guitar."), tokenizer("Two dogs.")])).loss
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        *,
        mlm_probability: float = 0.2,
        scheme: str = "bert",
        shifted: bool = True,
        packed: bool = False,
        position_offset: int = 0,
        **kwargs: Any,
    ) -> None:
        if packed and shifted:
            raise ValueError(
                "packed=True is for MLM (shifted=False): a packed causal-LM loss would predict each sequence's first "
                "token from the previous sequence. Train MNTP padded."
            )
        if scheme not in MASK_SCHEMES:
            raise ValueError(f"Unknown masking scheme {scheme!r}; choose one of {sorted(MASK_SCHEMES)}.")
        if tokenizer.mask_token is None:
            raise ValueError("The tokenizer has no mask_token: call set_mask_token(tokenizer, '_' | 'eos' | '<mask>').")
        if tokenizer.pad_token is None:
            raise ValueError("The tokenizer has no pad token; set tokenizer.pad_token (e.g. to its EOS token).")
        mask_replace_prob, random_replace_prob = MASK_SCHEMES[scheme]
        super().__init__(
            tokenizer,
            mlm=True,
            mlm_probability=mlm_probability,
            mask_replace_prob=mask_replace_prob,
            random_replace_prob=random_replace_prob,
            **kwargs,
        )
        self.scheme = scheme
        self.shifted = shifted
        self.packed = packed
        self.position_offset = position_offset

    def __call__(self, features: list[Any], return_tensors: str | None = None) -> dict[str, Any]:
        # Right padding whatever the tokenizer's side: every row starts at position 0, so its first token is the
        # one MNTP never selects (it has no predecessor), and absolute positions are those of an unpadded text.
        side, self.tokenizer.padding_side = self.tokenizer.padding_side, "right"
        try:
            batch = super().__call__(features, return_tensors)
        finally:
            self.tokenizer.padding_side = side
        return pack_masked_batch(batch, self.position_offset) if self.packed else batch

    def torch_mask_tokens(self, inputs: Any, special_tokens_mask: Any | None = None, offset_mapping: Any = None):
        if special_tokens_mask is None:
            special_tokens_mask = [
                self.tokenizer.get_special_tokens_mask(row, already_has_special_tokens=True) for row in inputs.tolist()
            ]
        special_tokens_mask = torch.as_tensor(special_tokens_mask, dtype=torch.bool).clone()
        if self.shifted:
            special_tokens_mask[:, 0] = True
        return super().torch_mask_tokens(inputs, special_tokens_mask=special_tokens_mask, offset_mapping=offset_mapping)


def pack_masked_batch(batch: dict[str, Any], position_offset: int = 0) -> dict[str, Any]:
    """A padded, masked batch as one packed row (see :class:`MaskingCollator`'s ``packed``).

    Args:
        batch: ``input_ids``, ``labels``, ``attention_mask`` (and optionally ``token_type_ids``), ``[batch, len]``.
        position_offset: Added to the per-sequence positions (RoBERTa family: ``padding_idx + 1``).

    Returns:
        ``input_ids`` / ``labels`` (/ ``token_type_ids``) as ``[1, real_tokens]``, ``position_ids``,
        ``cu_seq_lens_q/k`` and ``max_length_q/k``.

    Example:
        ::

            packed = pack_masked_batch(MaskingCollator(tokenizer, shifted=False)(features), position_offset=2)
    """
    if "attention_mask" not in batch:
        raise ValueError("Packed MLM batches need the tokenizer's attention_mask to find the padding.")
    real = batch["attention_mask"].bool()
    lengths = real.sum(dim=1)
    cu_seqlens = cu_seqlens_from_lengths(lengths)
    packed = {key: batch[key][real].unsqueeze(0) for key in ("input_ids", "labels", "token_type_ids") if key in batch}
    max_length = int(lengths.max())
    packed.update(
        position_ids=packed_position_ids(cu_seqlens, position_offset),
        cu_seq_lens_q=cu_seqlens,
        cu_seq_lens_k=cu_seqlens,
        max_length_q=max_length,
        max_length_k=max_length,
    )
    return packed
