"""Shared by the LLM2Vec tests: the leak probe and backbone builders."""

from __future__ import annotations

import torch

from st_contrast.modules import BidirectionalFlashTransformer, BidirectionalTransformer

PADDED_IMPLEMENTATIONS = ("eager", "sdpa")
PROBE_TEXTS = ("A man plays a guitar.", "Two dogs are running through the grass near a lake at noon.")


def build_backbone(path: str, implementation: str, **kwargs):
    """``eager`` / ``sdpa`` / ``flash_attention_2``: padded BidirectionalTransformer; ``packed_<backend>``: packed."""
    if implementation.startswith("packed_"):
        return BidirectionalFlashTransformer(path, attention_backend=implementation.removeprefix("packed_"), **kwargs)
    return BidirectionalTransformer(path, model_kwargs={"attn_implementation": implementation}, **kwargs)


def _row_positions(features: dict, row: int) -> torch.Tensor:
    """Indices (into the flattened last axis) of the real tokens of ``row``, first to last."""
    if "cu_seq_lens_q" in features:
        cu = features["cu_seq_lens_q"]
        return torch.arange(int(cu[row]), int(cu[row + 1]))
    return features["attention_mask"][row].nonzero().squeeze(-1)


def leak_probe(backbone, texts=PROBE_TEXTS, *, padding_side: str = "right", grad: bool = False) -> dict[str, float]:
    """How much row 0's first token (and the other rows) change when row 0's last real token changes.

    ``first``: change of row 0's first token, non-zero iff attention looks ahead.
    ``others``: change of every other row, must be zero (no attention across rows or into padding).
    """
    backbone.tokenizer.padding_side = padding_side
    device = next(backbone.parameters()).device
    features = {k: v.to(device) if torch.is_tensor(v) else v for k, v in backbone.preprocess(list(texts)).items()}
    positions = _row_positions(features, 0)
    changed = {key: value.clone() if torch.is_tensor(value) else value for key, value in features.items()}
    ids = changed["input_ids"].view(-1) if "cu_seq_lens_q" in changed else changed["input_ids"][0]
    ids[positions[-1]] = (ids[positions[-1]] + 7) % backbone.model.config.vocab_size
    with torch.set_grad_enabled(grad):
        before = backbone({k: v for k, v in features.items()})["token_embeddings"]
        after = backbone(changed)["token_embeddings"]
    flat = "cu_seq_lens_q" in features
    first = (before.view(-1, before.shape[-1]) if flat else before[0])[positions[0]]
    first_after = (after.view(-1, after.shape[-1]) if flat else after[0])[positions[0]]
    result = {"first": (first - first_after).abs().max().item(), "others": 0.0}
    for row in range(1, len(texts)):
        rows = _row_positions(features, row)
        b = before.view(-1, before.shape[-1])[rows] if flat else before[row][rows]
        a = after.view(-1, after.shape[-1])[rows] if flat else after[row][rows]
        result["others"] = max(result["others"], (a - b).abs().max().item())
    return result
