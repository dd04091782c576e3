"""What st_contrast supports for each transformers architecture: packed, bidirectional, MNTP/MLM, LoRA preset.

One table (:data:`ARCHITECTURES`, keyed by ``config.model_type``) answers every "does this backbone work?" question:
packing (:func:`~st_contrast.modules.packing_refusal`), bidirectional attention (:func:`~st_contrast.modules.set_causal`
refuses what cannot be made bidirectional, and a leak probe checks the rest), the masked pretraining objective, and
the LoRA preset that ``add_lora(model, "auto")`` picks. The README's architecture table is :func:`support_table`, and
a test keeps the two equal. Each entry marked supported is covered by a parity or leak-probe test on a tiny random
config (``tests/conftest.py``); a refusal says why and what to do instead.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "architecture",
    "bidirectional_refusal",
    "model_type_of",
    "packed_refusal",
    "support_table",
]

PADDED_ALTERNATIVE = "train it padded (model.packed: false in a config, packed=False in Python)"
"""What every packing refusal tells the user to do instead."""


@dataclass(frozen=True)
class Architecture:
    """st_contrast's support for one transformers ``model_type``.

    Args:
        name: Display name (README table).
        family: ``"encoder"`` (bidirectional by design; MLM) or ``"decoder"`` (causal LM; MNTP once bidirectional).
        lora_preset: The :data:`~st_contrast.adapters.LORA_PRESETS` key that ``add_lora(model, "auto")`` uses.
        packed_refusal: None when packed attention is supported, else why not (the user is told to train padded).
        bidirectional_refusal: Decoders: None when :func:`~st_contrast.modules.set_causal` can make it bidirectional,
            else why not.
        note: A short remark for the README table.

    Example:
        ::

            from st_contrast.modules.architectures import architecture

            assert architecture("gpt_neox").packed_refusal is None
    """

    name: str
    family: str
    lora_preset: str
    packed_refusal: str | None = None
    bidirectional_refusal: str | None = None
    note: str = ""

    @property
    def pretraining(self) -> str | None:
        """``"MLM"`` for encoders, ``"MNTP"`` for decoders that can be made bidirectional, else None."""
        if self.family == "encoder":
            return "MLM"
        return None if self.bidirectional_refusal else "MNTP"


_OWN_ATTENTION = (
    "its attention is computed in its own module, not through transformers' attention interface, so the packed "
    "kernels never see the sequence boundaries"
)
_GPT_NEO_CAUSAL = (
    "GPT-Neo's attention module applies a fixed causal mask buffer (GPTNeoSelfAttention.bias) that neither "
    "config.is_causal nor the attention mask lifts, and a saved model rebuilds it on load; keep it causal "
    "(bidirectional=False) or use GPT-NeoX / Pythia, GPT-J or a Llama-family decoder"
)

ARCHITECTURES: dict[str, Architecture] = {
    # encoders
    "bert": Architecture("BERT (MiniLM, bge, e5, gte)", "encoder", "encoder"),
    "roberta": Architecture("RoBERTa", "encoder", "encoder"),
    "xlm-roberta": Architecture("XLM-RoBERTa", "encoder", "encoder"),
    "modernbert": Architecture("ModernBERT", "encoder", "modernbert"),
    "nomic_bert": Architecture("NomicBERT", "encoder", "nomic_bert", note="transformers' native nomic_bert"),
    "distilbert": Architecture("DistilBERT", "encoder", "distilbert"),
    "electra": Architecture("ELECTRA", "encoder", "encoder"),
    "mpnet": Architecture(
        "MPNet (all-mpnet-base-v2)",
        "encoder",
        "mpnet",
        packed_refusal=(
            "MPNet adds a relative-position bias, computed over the whole (packed) row, to the scores of its own "
            "attention module, and its layers do not pass the sequence boundaries on to it"
        ),
    ),
    "deberta-v2": Architecture(
        "DeBERTa-v2/v3",
        "encoder",
        "deberta",
        packed_refusal=(
            "DeBERTa's disentangled relative attention (content-to-position and position-to-content scores) is "
            f"computed over the padded layout, and {_OWN_ATTENTION}"
        ),
    ),
    # decoders
    "llama": Architecture("Llama", "decoder", "decoder"),
    "mistral": Architecture("Mistral", "decoder", "decoder"),
    "qwen2": Architecture("Qwen2", "decoder", "decoder"),
    "qwen3": Architecture("Qwen3", "decoder", "decoder"),
    "gemma": Architecture("Gemma", "decoder", "decoder"),
    "gemma2": Architecture("Gemma2", "decoder", "decoder", note="logit soft-capping: `sdpa` or `flash_attn` kernels"),
    "gemma3_text": Architecture("Gemma3 (text; EmbeddingGemma)", "decoder", "decoder"),
    "phi3": Architecture("Phi-3", "decoder", "phi3"),
    "gpt_neox": Architecture("GPT-NeoX (Pythia)", "decoder", "gpt_neox"),
    "gptj": Architecture("GPT-J", "decoder", "gptj", packed_refusal=f"GPT-J: {_OWN_ATTENTION}"),
    "gpt_neo": Architecture(
        "GPT-Neo",
        "decoder",
        "gpt_neo",
        packed_refusal=f"GPT-Neo: {_OWN_ATTENTION}",
        bidirectional_refusal=_GPT_NEO_CAUSAL,
    ),
    "bloom": Architecture(
        "BLOOM",
        "decoder",
        "gpt_neox",
        packed_refusal=(
            "BLOOM's ALiBi bias is built from the padded attention mask inside its own attention module, and the "
            "packed kernels take no per-sequence ALiBi slopes"
        ),
        note="bidirectional ALiBi biases by key position, as transformers computes it",
    ),
}
"""``config.model_type`` -> what st_contrast supports for it (see :class:`Architecture`)."""


def model_type_of(config) -> str | None:
    """The ``model_type`` of a transformers config, the key of :data:`ARCHITECTURES`.

    A multimodal config keeps its own ``model_type`` (not its text config's): only the listed, text-only
    architectures are supported.

    Args:
        config: A transformers ``PretrainedConfig`` (``model.config``).

    Returns:
        ``config.model_type``, or None when it has none.
    """
    return getattr(config, "model_type", None)


def architecture(model_type: str | None) -> Architecture | None:
    """The :class:`Architecture` entry of ``model_type``, or None for architectures st_contrast has not tested.

    Args:
        model_type: A transformers ``model_type`` such as ``"gpt_neox"``.

    Example:
        ::

            from st_contrast.modules.architectures import architecture

            architecture("nomic_bert").lora_preset  # "nomic_bert"
    """
    return ARCHITECTURES.get(model_type) if model_type else None


def packed_refusal(model_type: str | None) -> str | None:
    """Why ``model_type`` cannot run packed (ending in what to do instead), or None when it can.

    Args:
        model_type: A transformers ``model_type``; architectures missing from :data:`ARCHITECTURES` are refused.

    Returns:
        A message naming the architecture, the reason and ``model.packed: false`` / ``packed=False``, or None.

    Example:
        ::

            from st_contrast.modules.architectures import packed_refusal

            print(packed_refusal("deberta-v2"))  # model_type 'deberta-v2' cannot run packed: DeBERTa's ...
    """
    entry = architecture(model_type)
    if entry is None:
        supported = ", ".join(t for t, a in ARCHITECTURES.items() if a.packed_refusal is None)
        return f"model_type {model_type!r} is not supported packed (supported: {supported}); {PADDED_ALTERNATIVE}"
    if entry.packed_refusal:
        return f"model_type {model_type!r} cannot run packed: {entry.packed_refusal}; {PADDED_ALTERNATIVE}"
    return None


def bidirectional_refusal(model_type: str | None) -> str | None:
    """Why ``model_type`` cannot be made bidirectional, or None.

    Architectures missing from :data:`ARCHITECTURES` get None: :func:`~st_contrast.modules.set_causal`'s leak probe
    decides for them.

    Args:
        model_type: A transformers ``model_type``.
    """
    entry = architecture(model_type)
    return entry.bidirectional_refusal if entry else None


def support_table() -> str:
    """The README's architecture table (markdown): packed, bidirectional, MNTP/MLM, LoRA preset per architecture.

    Example:
        ::

            from st_contrast.modules.architectures import support_table

            print(support_table())  # paste into README.md's "Architectures" section after changing the table
    """
    rows = [
        "| architecture | `model_type` | packed | bidirectional | MNTP / MLM | LoRA preset |",
        "|---|---|---|---|---|---|",
    ]
    for model_type, entry in ARCHITECTURES.items():
        packed = "✔" if entry.packed_refusal is None else "refused"
        if entry.family == "encoder":
            bidirectional = "✔ (encoder)"
        else:
            bidirectional = "✔" if entry.bidirectional_refusal is None else "refused"
        pretraining = entry.pretraining or "refused"
        name = f"{entry.name} ({entry.note})" if entry.note else entry.name
        rows.append(f"| {name} | `{model_type}` | {packed} | {bidirectional} | {pretraining} | `{entry.lora_preset}` |")
    return "\n".join(rows)
