"""A cheap check that a backbone really attends bidirectionally and never across sequences.

:func:`~st_contrast.modules.set_causal` runs :func:`check_bidirectional` after making a backbone bidirectional (so
:class:`~st_contrast.modules.BidirectionalTransformer` proves itself whenever it is built or loaded): two short
sequences of token ids go through the model twice, the second time with the last token of the first sequence
changed. The first token's output must move (attention looks ahead) and the second sequence must not (no attention
across rows, padding or packed boundaries). An architecture whose attention ignores ``config.is_causal`` is refused
with an error that names it, instead of staying silently causal.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from st_contrast.attention.interface import attention_implementation_name, is_packed_implementation
from st_contrast.compat import attn_implementation

__all__ = ["BidirectionalityError", "LeakProbe", "check_bidirectional", "probe_attention"]

TOLERANCE = 1e-4
"""Relative change above which an output counts as moved (a causal model's first token moves by exactly 0)."""
_LENGTHS = (5, 3)


class BidirectionalityError(ValueError):
    """A backbone cannot be (or did not become) bidirectional; the message names the architecture and why."""


@dataclass(frozen=True)
class LeakProbe:
    """The outcome of :func:`probe_attention`.

    Attributes:
        ahead: Relative change of sequence 0's first output when its last token changes (> 0: it looks ahead).
        across: Largest relative change of sequence 1's outputs (must be 0: attention stays within a sequence).
    """

    ahead: float
    across: float

    @property
    def sees_ahead(self) -> bool:
        return self.ahead > TOLERANCE

    @property
    def stays_within_sequences(self) -> bool:
        return self.across <= TOLERANCE


def _probe_inputs(backbone: PreTrainedModel) -> tuple[dict, list[torch.Tensor]]:
    """Model inputs of two sequences (lengths 5 and 3; padded, or packed for a packed implementation) and the
    flat index of each sequence's tokens."""
    config = backbone.config.get_text_config()
    vocab, pad = int(config.vocab_size), getattr(config, "pad_token_id", None)
    pad = 0 if pad is None else int(pad)
    ids = [(11 + 37 * i) % vocab for i in range(sum(_LENGTHS))]
    ids = [(i + 1) % vocab if i == pad else i for i in ids]
    rows = [ids[: _LENGTHS[0]], ids[_LENGTHS[0] :]]
    device = backbone.device
    if is_packed_implementation(attn_implementation(backbone.config)):
        cu = torch.tensor([0, _LENGTHS[0], sum(_LENGTHS)], dtype=torch.int32, device=device)
        positions = torch.cat([torch.arange(n) for n in _LENGTHS]).unsqueeze(0).to(device)
        inputs = {
            "input_ids": torch.tensor([ids], device=device),
            "position_ids": positions,
            "cu_seq_lens_q": cu,
            "cu_seq_lens_k": cu,
            "max_length_q": max(_LENGTHS),
            "max_length_k": max(_LENGTHS),
        }
        index = [torch.arange(0, _LENGTHS[0]), torch.arange(_LENGTHS[0], sum(_LENGTHS))]
        return inputs, index
    width = max(_LENGTHS)
    padded = [row + [pad] * (width - len(row)) for row in rows]
    mask = [[1] * len(row) + [0] * (width - len(row)) for row in rows]
    inputs = {
        "input_ids": torch.tensor(padded, device=device),
        "attention_mask": torch.tensor(mask, device=device),
    }
    index = [torch.arange(0, _LENGTHS[0]), torch.arange(width, width + _LENGTHS[1])]
    return inputs, index


def probe_attention(backbone: PreTrainedModel) -> LeakProbe:
    """Run the leak probe on a transformers model (any head; eval mode and no gradients while it runs).

    A model running one of st_contrast's packed kernels is probed, packed, with the exact one (``sdpa`` backend,
    any device), since the GPU kernels may not run where the model is being set up.

    Args:
        backbone: A transformers model with its current attention implementation (padded or packed).

    Returns:
        The :class:`LeakProbe` measurements.

    Example:
        ::

            from transformers import AutoModel
            from st_contrast.modules import set_causal
            from st_contrast.modules.leak_probe import probe_attention

            model = set_causal(AutoModel.from_pretrained("Qwen/Qwen3-0.6B"), False)
            assert probe_attention(model).sees_ahead
    """
    inputs, (first, second) = _probe_inputs(backbone)
    changed = {**inputs, "input_ids": inputs["input_ids"].clone()}
    changed["input_ids"].view(-1)[first[-1]] = (inputs["input_ids"].view(-1)[first[-1]] + 1) % int(
        backbone.config.get_text_config().vocab_size
    )
    modes = {module: module.training for module in backbone.modules()}
    implementation = attn_implementation(backbone.config)
    exact = attention_implementation_name("sdpa")
    if is_packed_implementation(implementation) and implementation != exact:
        # Every packed kernel gets the same causal flag and window (attention.interface); the exact one runs anywhere.
        backbone.set_attn_implementation(exact)
    backbone.eval()
    try:
        with torch.no_grad():
            before, after = (backbone(**features)[0].float() for features in (inputs, changed))
    finally:
        for module, training in modes.items():
            module.training = training
        if attn_implementation(backbone.config) != implementation:
            backbone.set_attn_implementation(implementation)
    before, after = before.reshape(-1, before.shape[-1]), after.reshape(-1, after.shape[-1])
    scale = before.abs().max().clamp_min(1e-6)
    ahead = (after[first[0]] - before[first[0]]).abs().max() / scale
    across = (after[second] - before[second]).abs().max() / scale
    return LeakProbe(ahead=ahead.item(), across=across.item())


def check_bidirectional(backbone: PreTrainedModel) -> LeakProbe:
    """Raise :class:`BidirectionalityError` unless ``backbone`` looks ahead and stays within each sequence.

    Models on the ``meta`` device (nothing to compute with) are not probed.

    Args:
        backbone: A transformers model that was made bidirectional.

    Returns:
        The :class:`LeakProbe` measurements (a meta model reports zeros).

    Raises:
        BidirectionalityError: The first token did not move (still causal) or another sequence did (attention
            crosses sequences); the message names the architecture.

    Example:
        ::

            from transformers import AutoModel
            from st_contrast.modules import check_bidirectional

            model = AutoModel.from_pretrained("answerdotai/ModernBERT-base")  # an encoder: bidirectional already
            print(check_bidirectional(model))  # set_causal(model, False) runs this check itself
    """
    if any(parameter.device.type == "meta" for parameter in backbone.parameters()):
        return LeakProbe(ahead=0.0, across=0.0)
    probe = probe_attention(backbone)
    name = f"{type(backbone).__name__} (model_type {getattr(backbone.config, 'model_type', None)!r})"
    if not probe.sees_ahead:
        raise BidirectionalityError(
            f"{name} stays causal after it was made bidirectional: its first token's output did not change when a "
            f"later token did (leak probe, relative change {probe.ahead:.1e}). Its attention does not follow "
            "config.is_causal, so st_contrast cannot make it bidirectional; keep it causal (bidirectional=False) or "
            "use an architecture marked bidirectional in the README's architecture table."
        )
    if not probe.stays_within_sequences:
        raise BidirectionalityError(
            f"{name} attends across sequences: changing one sequence changed another by {probe.across:.1e} "
            f"(leak probe, attention implementation {attn_implementation(backbone.config)!r}). Use another attention "
            "implementation (sdpa or eager)."
        )
    return probe
