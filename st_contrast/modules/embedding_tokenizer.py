"""Tokenization for decoder embedders: EOS after truncation, exact instruction boundaries, SGPT brackets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

__all__ = ["SGPT_BRACKETS", "EmbeddingTokenizer", "EncodedTexts", "collate_ids", "pad_with_eos"]

SGPT_BRACKETS: dict[str, tuple[str, str]] = {"query": ("[", "]"), "document": ("{", "}")}
"""SGPT's bracket characters around the text of each task (Muennighoff, 2022, section 3.2)."""


@dataclass
class EncodedTexts:
    """Token ids of a batch, unpadded, with how many leading tokens of each row are instruction."""

    input_ids: list[list[int]]
    instruction_lengths: list[int] | None


class EmbeddingTokenizer:
    """Tokenizes texts for a decoder embedder (used by :class:`~st_contrast.modules.BidirectionalTransformer`).

    For each text (with ``instruction``: ``instruction + text``, tokenized as one string):

    1. tokenize with the tokenizer's own special tokens, truncated so that what is added below still fits
       in ``max_length``;
    2. split the ids into prefix (leading special tokens and the instruction), text and suffix (trailing
       special tokens). The instruction ends before the first token whose character span reaches into the
       text (from the tokenizer's offsets), so a token merged across the boundary counts as text;
    3. reassemble ``prefix + [open bracket] + text + [close bracket] + suffix + [EOS]``. EOS is only
       added when the tokenizer did not add it already.

    Args:
        tokenizer: A transformers tokenizer (a fast one when instructions are used: offsets are needed).
        append_eos: Append ``tokenizer.eos_token_id`` after truncation.
        sgpt_brackets: Insert SGPT's ``[ ]`` (task ``"query"``) or ``{ }`` (``"document"``) as token ids.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, *, append_eos: bool = True, sgpt_brackets: bool = False):
        self.tokenizer = tokenizer
        self.append_eos = append_eos
        self.sgpt_brackets = sgpt_brackets
        self.eos_token_id = tokenizer.eos_token_id
        if append_eos and self.eos_token_id is None:
            raise ValueError(
                f"append_eos=True but the tokenizer {type(tokenizer).__name__} has no EOS token: set one "
                "(tokenizer.eos_token = '...', then save it with the model) or pass append_eos=False and use a "
                "pooling that does not rely on a final EOS (e.g. mean)."
            )
        probe = tokenizer("a", add_special_tokens=True)["input_ids"]
        self.tokenizer_adds_eos = bool(probe) and probe[-1] == self.eos_token_id
        self.bracket_ids: dict[str, tuple[int, ...]] = {}
        if sgpt_brackets:
            self.bracket_ids = {task: tuple(self._single_id(c) for c in pair) for task, pair in SGPT_BRACKETS.items()}

    def _single_id(self, text: str) -> int:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) != 1 or ids[0] == self.tokenizer.unk_token_id:
            raise ValueError(
                f"SGPT bracket {text!r} is {ids} for this tokenizer, not one known token; use sgpt_brackets=False."
            )
        return ids[0]

    def extra_tokens(self, brackets: bool) -> int:
        """How many ids are inserted after truncation (EOS and brackets)."""
        return int(self.append_eos and not self.tokenizer_adds_eos) + (2 if brackets else 0)

    def __call__(
        self,
        texts: list[str],
        *,
        instruction: str | None = None,
        max_length: int | None = None,
        task: str | None = None,
    ) -> EncodedTexts:
        brackets = self.bracket_ids.get(task) if self.sgpt_brackets else None
        extra = self.extra_tokens(brackets is not None)
        joint = [instruction + text for text in texts] if instruction else list(texts)
        limit = None if max_length is None else max_length - extra
        if limit is not None and limit < 1:
            raise ValueError(f"max_length={max_length} leaves no room for the text after {extra} added token(s).")
        if instruction and not self.tokenizer.is_fast:
            raise ValueError(
                "Instructions need a fast tokenizer (their token boundaries come from its offsets); "
                f"{type(self.tokenizer).__name__} is not one. Load the model with its fast tokenizer."
            )
        encoding = self.tokenizer(
            joint,
            add_special_tokens=True,
            truncation=limit is not None,
            max_length=limit,
            return_special_tokens_mask=True,
            return_offsets_mapping=bool(instruction),
        )
        rows, instruction_lengths = [], []
        for index, ids in enumerate(encoding["input_ids"]):
            special = encoding["special_tokens_mask"][index]
            start = self._text_start(special, encoding["offset_mapping"][index] if instruction else None, instruction)
            end = len(ids)
            while end > start and special[end - 1]:
                end -= 1
            prefix, text, suffix = ids[:start], ids[start:end], ids[end:]
            if not text and texts[index].strip():
                raise ValueError(self._no_text_message(instruction, max_length, len(prefix) + len(suffix) + extra))
            if brackets is not None:
                text = [brackets[0], *text, brackets[1]]
            row = [*prefix, *text, *suffix]
            if self.append_eos and not (row and row[-1] == self.eos_token_id):
                row.append(self.eos_token_id)
            rows.append(row)
            instruction_lengths.append(len(prefix))
        return EncodedTexts(rows, instruction_lengths if instruction else None)

    @staticmethod
    def _text_start(special: list[int], offsets: list[tuple[int, int]] | None, instruction: str | None) -> int:
        start = 0
        while start < len(special) and special[start]:
            start += 1
        if offsets is not None:
            # The instruction's tokens (its own special tokens included) end by the instruction's last character; a
            # special token the tokenizer adds (offsets (0, 0): the EOS of an empty text) is not the instruction's.
            boundary = len(instruction)
            while (
                start < len(offsets)
                and offsets[start][1] <= boundary
                and not (special[start] and offsets[start][1] == 0)
            ):
                start += 1
        return start

    @staticmethod
    def _no_text_message(instruction: str | None, max_length: int | None, used: int) -> str:
        if instruction:
            return (
                f"Truncation to max_length={max_length} leaves no token of the text after the instruction "
                f"{instruction!r} ({used} tokens with special tokens, EOS and brackets). Shorten the instruction or "
                "raise max_seq_length."
            )
        return f"max_length={max_length} leaves no token of the text; raise max_seq_length."


def collate_ids(
    encoded: EncodedTexts,
    tokenizer: PreTrainedTokenizerBase,
    *,
    data_collator: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None,
    position_offset: int = 0,
) -> dict[str, Any]:
    """Batch :class:`EncodedTexts` as model features, padded or packed, with ``instruction_mask`` when present.

    Padded: ``input_ids`` / ``attention_mask`` of shape ``[batch, longest]`` on ``tokenizer.padding_side``.
    Packed (``data_collator`` is a ``DataCollatorWithFlattening``): ``[1, total_tokens]`` with ``cu_seq_lens``,
    ``position_ids`` (shifted by ``position_offset``). ``instruction_mask`` has ``input_ids``' shape,
    1 on instruction tokens, so Sentence Transformers' GradCache splitting slices it with the tokens.
    """
    masks = None
    if encoded.instruction_lengths is not None:
        masks = [
            [1] * n + [0] * (len(ids) - n)
            for ids, n in zip(encoded.input_ids, encoded.instruction_lengths, strict=True)
        ]
    if data_collator is not None:
        features = data_collator([{"input_ids": ids} for ids in encoded.input_ids])
        features.pop("labels", None)
        if position_offset:
            features["position_ids"] = features["position_ids"] + position_offset
        if masks is not None:
            features["instruction_mask"] = torch.tensor([value for mask in masks for value in mask]).unsqueeze(0)
        return features

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise ValueError("The tokenizer has neither a pad nor an EOS token to pad with; set tokenizer.pad_token.")
    width = max(len(ids) for ids in encoded.input_ids)
    left = tokenizer.padding_side == "left"

    def pad(row: list[int], value: int) -> list[int]:
        filler = [value] * (width - len(row))
        return filler + row if left else row + filler

    features: dict[str, Any] = {
        "input_ids": torch.tensor([pad(ids, pad_id) for ids in encoded.input_ids]),
        "attention_mask": torch.tensor([pad([1] * len(ids), 0) for ids in encoded.input_ids]),
    }
    if masks is not None:
        features["instruction_mask"] = torch.tensor([pad(mask, 0) for mask in masks])
    return features


def pad_with_eos(tokenizer: Any) -> None:
    """Give a tokenizer without a pad token its EOS token as the pad token (GPT-Neo, Llama and Mistral have none).

    Padding is masked out of attention and pooling, so which token pads changes no embedding; without one, a stock
    ``Transformer`` cannot encode a batch of texts of different lengths.
    """
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
