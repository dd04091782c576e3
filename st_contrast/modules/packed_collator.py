"""The flattening collator of packed modules: transformers' own, refusing texts with no tokens outside ``encode``."""

from __future__ import annotations

from typing import Any

from transformers import DataCollatorWithFlattening

from st_contrast.compat import in_encode

__all__ = ["PackedTextCollator"]


class PackedTextCollator(DataCollatorWithFlattening):
    """``DataCollatorWithFlattening`` (``cu_seq_lens``, ``seq_idx``, per-sequence ``position_ids``) for packed modules.

    A text that tokenizes to no tokens (``""`` with a tokenizer that adds no special tokens, as GPT-NeoX's and Qwen's
    do) is an empty segment of the packed batch, which Sentence Transformers' flattened pooling reads as its
    neighbour's tokens (last-token pooling takes the previous text's last token, CLS pooling the next text's first).
    Padded, such a text embeds as zeros. ``encode`` regroups packed outputs into the padded layout first (see
    :mod:`st_contrast.modules.packed_outputs`), so it gives those zeros too; a training or ``no_grad`` forward keeps
    the packed layout, so there the text is refused with its position instead of silently taking another's
    embedding.
    """

    def __call__(self, features: list[dict[str, Any]], *args: Any, **kwargs: Any) -> dict[str, Any]:
        empty = [index for index, feature in enumerate(features) if len(feature["input_ids"]) == 0]
        if empty and not in_encode():
            raise ValueError(
                f"Text(s) at batch position(s) {empty[:10]} tokenize to no tokens (an empty or blank text, and a "
                "tokenizer that adds no special tokens). A packed batch has no padding to embed them as: remove "
                "empty texts from the training data, or use a tokenizer that adds a BOS or EOS token."
            )
        return super().__call__(features, *args, **kwargs)
