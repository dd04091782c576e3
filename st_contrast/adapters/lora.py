"""LoRA presets for encoder and decoder backbones, added through peft (Hu et al., 2021)."""

from __future__ import annotations

import copy
import os

from peft import LoraConfig
from torch import nn
from transformers import PreTrainedModel

from st_contrast.adapters.parameters import ParameterCount, count_parameters
from st_contrast.compat import peft_configs, require_adapter_support
from st_contrast.modules.architectures import architecture, model_type_of
from st_contrast.modules.backbones import backbone_models

__all__ = ["LORA_PRESETS", "add_lora", "linear_layer_names"]

_GATED = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LORA_PRESETS: dict[str, tuple[str, ...]] = {
    # BERT, RoBERTa, XLM-R, MiniLM, ELECTRA: attention projections and both MLP/output projections ("dense").
    "encoder": ("query", "key", "value", "dense"),
    # Llama, Mistral, Qwen2/3, Gemma 1-3: attention and gated-MLP projections.
    "decoder": _GATED,
    # ModernBERT: fused QKV, attention output, MLP in/out.
    "modernbert": ("Wqkv", "Wo", "Wi"),
    # NomicBERT (transformers' nomic_bert): Llama-style names.
    "nomic_bert": _GATED,
    "distilbert": ("q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"),
    # MPNet: q, k, v, o and the MLP's intermediate/output "dense".
    "mpnet": ("q", "k", "v", "o", "dense"),
    "deberta": ("query_proj", "key_proj", "value_proj", "dense"),
    # Phi-3: fused QKV and fused gate/up projections.
    "phi3": ("qkv_proj", "o_proj", "gate_up_proj", "down_proj"),
    # GPT-NeoX / Pythia and BLOOM: fused QKV, attention output, MLP in/out.
    "gpt_neox": ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"),
    "gpt_neo": ("q_proj", "k_proj", "v_proj", "out_proj", "c_fc", "c_proj"),
    "gptj": ("q_proj", "k_proj", "v_proj", "out_proj", "fc_in", "fc_out"),
}
"""Module-name suffixes that each preset adapts. ``"auto"`` uses the preset of the backbone's architecture
(:data:`~st_contrast.modules.architectures.ARCHITECTURES`), else the first preset that matches its layers."""


def add_lora(
    model: nn.Module,
    preset_or_config: str | LoraConfig = "auto",
    *,
    r: int = 8,
    alpha: int = 16,
    dropout: float = 0.05,
    adapter_name: str = "default",
) -> ParameterCount:
    """Add a trainable LoRA adapter to every transformers backbone of ``model``, freezing the backbone.

    LoRA (Hu et al., 2021, "LoRA: Low-Rank Adaptation of Large Language Models", arXiv:2106.09685)
    learns a low-rank update ``B @ A`` beside each adapted linear layer. The adapter is added with
    transformers' ``add_adapter`` (what Sentence Transformers' ``model.add_adapter`` calls), so
    ``model.save(...)`` writes only the adapter plus ``adapter_config.json``, whose
    ``base_model_name_or_path`` is recorded here as an absolute path when the base is a local
    directory (reloading then works from any working directory). It works with ``Transformer``,
    :class:`~st_contrast.modules.FlashTransformer`, and every tower of a ``Router``. Modules outside
    the backbones (``Dense`` heads) keep their ``requires_grad``.

    Args:
        model: A ``SentenceTransformer`` (or any module holding transformers backbones).
        preset_or_config: A key of :data:`LORA_PRESETS` (``"encoder"``, ``"decoder"``, ``"modernbert"``,
            ``"gpt_neox"``, ...), ``"auto"`` (default: the architecture's preset, see the README's architecture
            table), or a ``peft.LoraConfig`` used as given (``r``/``alpha``/``dropout`` ignored).
        r: LoRA rank.
        alpha: LoRA scaling numerator (the update is scaled by ``alpha / r``).
        dropout: Dropout on the adapter's input.
        adapter_name: Name of the adapter in peft.

    Returns:
        The resulting :class:`~st_contrast.adapters.ParameterCount`.

    Raises:
        st_contrast.compat.CompatibilityError: The installed transformers refuses the installed peft (its adapter
            integration has a peft floor); the message says what to install.

    Example:
        ::

            from sentence_transformers import SentenceTransformer
            from st_contrast.adapters import add_lora

            model = SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2")
            print(add_lora(model, "encoder", r=16, alpha=32))
            model.save("output/minilm-lora")  # adapter only; SentenceTransformer("output/minilm-lora") reloads it
    """
    require_adapter_support()
    for backbone in backbone_models(model):
        config = (
            copy.deepcopy(preset_or_config)
            if isinstance(preset_or_config, LoraConfig)
            else _preset_config(backbone, preset_or_config, r=r, alpha=alpha, dropout=dropout)
        )
        backbone.add_adapter(config, adapter_name=adapter_name)
        config = peft_configs(backbone)[adapter_name]
        if config.base_model_name_or_path and os.path.isdir(config.base_model_name_or_path):
            config.base_model_name_or_path = os.path.abspath(config.base_model_name_or_path)
    return count_parameters(model)


def linear_layer_names(backbone: PreTrainedModel) -> list[str]:
    """The distinct last name components of the backbone's ``nn.Linear`` layers (LoRA target candidates).

    Args:
        backbone: A transformers model.

    Returns:
        Sorted names such as ``["dense", "key", "query", "value"]``.
    """
    return sorted(
        {name.rsplit(".", 1)[-1] for name, module in backbone.named_modules() if isinstance(module, nn.Linear)}
    )


def _preset_config(backbone: PreTrainedModel, preset: str, *, r: int, alpha: int, dropout: float) -> LoraConfig:
    if preset != "auto" and preset not in LORA_PRESETS:
        raise ValueError(
            f"Unknown LoRA preset {preset!r}; use 'auto', one of {sorted(LORA_PRESETS)}, or a peft.LoraConfig."
        )
    available = set(linear_layer_names(backbone))
    if preset == "auto" and (entry := architecture(model_type_of(backbone.config))) is not None:
        preset = entry.lora_preset
    candidates = LORA_PRESETS if preset == "auto" else {preset: LORA_PRESETS[preset]}
    for targets in candidates.values():
        matched = [name for name in targets if name in available]
        if matched:
            return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=matched)
    looked_for = {name: list(targets) for name, targets in candidates.items()}
    raise ValueError(
        f"LoRA preset {preset!r} matches no linear layer of {type(backbone).__name__}: it looked for {looked_for}, "
        f"and the model's linear layers are named {sorted(available)}. Pass "
        "peft.LoraConfig(target_modules=[...]) with names from that list."
    )
