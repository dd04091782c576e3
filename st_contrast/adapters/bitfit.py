"""BitFit: train only the bias terms of a model (Ben Zaken et al., 2022)."""

from __future__ import annotations

from torch import nn

from st_contrast.adapters.parameters import ParameterCount, count_parameters
from st_contrast.modules.backbones import backbone_models

__all__ = ["apply_bitfit"]


def apply_bitfit(model: nn.Module, *, train_embeddings: bool = False, train_heads: bool = False) -> ParameterCount:
    """Freeze every parameter except the bias terms, as SGPT's ``--freezenonbias`` does.

    BitFit (Ben Zaken, Ravfogel and Goldberg, 2022, "BitFit: Simple Parameter-efficient Fine-tuning
    for Transformer-based Masked Language-models", ACL) updates only biases (attention, MLP and
    LayerNorm); SGPT (Muennighoff, 2022, arXiv:2202.08904) trains GPT decoders this way for
    embeddings. Parameters whose own name is ``bias`` stay trainable; everything else is frozen.

    Args:
        model: A ``SentenceTransformer`` (or any module holding transformers backbones).
        train_embeddings: Also train the backbones' input (word) embedding matrices.
        train_heads: Also train every parameter outside the backbones, e.g. ``Dense`` layers added
            before or after pooling. With ``False`` their weights are frozen and their biases train.

    Returns:
        The resulting :class:`~st_contrast.adapters.ParameterCount`.

    Example:
        ::

            from sentence_transformers import SentenceTransformer
            from st_contrast.adapters import apply_bitfit

            model = SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2")
            print(apply_bitfit(model))  # trainable 26,112 / 22,713,216 parameters (0.115%)
    """
    backbones = backbone_models(model)
    backbone_parameters = {id(p) for backbone in backbones for p in backbone.parameters()}
    if not any(_is_bias(name) and id(p) in backbone_parameters for name, p in model.named_parameters()):
        names = ", ".join(type(backbone).__name__ for backbone in backbones)
        raise ValueError(
            f"BitFit found no bias terms in {names} (e.g. Llama and Mistral have none): it would train nothing "
            "in the backbone. Use add_lora(model, 'decoder') instead, or a model with biases (BERT, Qwen2, GPT-Neo)."
        )
    embeddings = {id(p) for backbone in backbones for p in backbone.get_input_embeddings().parameters()}
    for name, parameter in model.named_parameters():
        is_head = id(parameter) not in backbone_parameters
        parameter.requires_grad_(
            _is_bias(name) or (train_heads and is_head) or (train_embeddings and id(parameter) in embeddings)
        )
    return count_parameters(model)


def _is_bias(parameter_name: str) -> bool:
    return parameter_name.rsplit(".", 1)[-1] == "bias"
