"""EOS after truncation as a property of the saved tokenizer, so plain Sentence Transformers appends it too."""

from __future__ import annotations

import json
from typing import Any

from tokenizers import processors
from transformers import PreTrainedTokenizerBase

from st_contrast.modules.embedding_tokenizer import EmbeddingTokenizer

__all__ = ["bake_eos_into_tokenizer"]

_PROBES = (
    "A man is playing a guitar.",
    "x",
    "The committee postponed its decision on the new budget until the spring meeting, citing missing figures.",
)
_MAX_LENGTHS = (None, 4, 9)


def bake_eos_into_tokenizer(tokenizer: PreTrainedTokenizerBase) -> str | None:
    """Make a fast tokenizer append EOS itself, as the last token after truncation, in place.

    The tokenizer's post-processor (saved in ``tokenizer.json``) gets EOS at the end of its template, so a plain
    ``tokenizer(texts, truncation=True, max_length=n)`` (what Sentence Transformers' ``Transformer`` calls) gives
    what :class:`~st_contrast.modules.EmbeddingTokenizer` with ``append_eos=True`` gives: the truncation leaves room
    for EOS. The result is checked on texts of several lengths and truncation limits; on any difference the
    tokenizer is restored.

    Args:
        tokenizer: A fast transformers tokenizer with an EOS token.

    Returns:
        None when done, else why it cannot be done (the tokenizer is then unchanged).
    """
    if not getattr(tokenizer, "is_fast", False):
        return "a slow tokenizer cannot append EOS from its saved configuration"
    if tokenizer.eos_token_id is None:
        return "the tokenizer has no EOS token"
    reference = EmbeddingTokenizer(tokenizer, append_eos=True)
    if reference.tokenizer_adds_eos:
        return None
    expected = {limit: reference(list(_PROBES), max_length=limit).input_ids for limit in _MAX_LENGTHS}
    backend = tokenizer.backend_tokenizer
    current = json.loads(backend.to_str()).get("post_processor")
    replacement = _with_eos(current, tokenizer.eos_token, tokenizer.eos_token_id)
    if replacement is None:
        return f"its post-processor ({(current or {}).get('type')}) has no template to append EOS to"
    original = backend.post_processor
    backend.post_processor = replacement
    for limit, rows in expected.items():
        got = tokenizer(list(_PROBES), truncation=limit is not None, max_length=limit)["input_ids"]
        if got != rows:
            backend.post_processor = original
            return "with EOS in its post-processor, the tokenizer does not reproduce EOS-after-truncation exactly"
    return None


def _template(pieces: list[dict[str, Any]]) -> str:
    words = []
    for piece in pieces:
        if "SpecialToken" in piece:
            words.append(f"{piece['SpecialToken']['id']}:{piece['SpecialToken']['type_id']}")
        else:
            words.append(f"${piece['Sequence']['id']}:{piece['Sequence']['type_id']}")
    return " ".join(words)


def _with_eos(post_processor: dict[str, Any] | None, eos: str, eos_id: int) -> Any:
    """A post-processor that appends ``eos`` to what ``post_processor`` (its JSON form) produces, or None."""
    if post_processor is None:
        return processors.TemplateProcessing(
            single=f"$A:0 {eos}:0", pair=f"$A:0 {eos}:0 $B:1 {eos}:1", special_tokens=[(eos, eos_id)]
        )
    kind = post_processor.get("type")
    if kind == "TemplateProcessing":
        special = [
            (token, spec["ids"][0]) for token, spec in post_processor["special_tokens"].items() if len(spec["ids"]) == 1
        ]
        if eos not in dict(special):
            special.append((eos, eos_id))
        return processors.TemplateProcessing(
            single=f"{_template(post_processor['single'])} {eos}:0",
            pair=f"{_template(post_processor['pair'])} {eos}:1",
            special_tokens=special,
        )
    if kind == "ByteLevel":
        byte_level = processors.ByteLevel(trim_offsets=post_processor.get("trim_offsets", True))
        return processors.Sequence([byte_level, _with_eos(None, eos, eos_id)])
    if kind == "Sequence":
        parts = post_processor["processors"]
        templates = [index for index, part in enumerate(parts) if part.get("type") == "TemplateProcessing"]
        if len(templates) != 1 or any(part.get("type") not in ("ByteLevel", "TemplateProcessing") for part in parts):
            return None
        rebuilt = [
            _with_eos(part, eos, eos_id)
            if index == templates[0]
            else processors.ByteLevel(trim_offsets=part.get("trim_offsets", True))
            for index, part in enumerate(parts)
        ]
        return processors.Sequence(rebuilt)
    return None
