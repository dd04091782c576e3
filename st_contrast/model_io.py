"""Model I/O: loading saved models (packed, without trusting remote code), exporting plain Sentence Transformers
models, and the base models that saved LoRA adapters point at."""

from __future__ import annotations

import copy
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Transformer
from sentence_transformers.sentence_transformer.modules import Pooling

from st_contrast.compat import (
    clear_prompt_lengths,
    has_peft_adapters,
    load_with_module_classes,
    peft_configs,
    prompt_length,
    require_adapter_support,
)
from st_contrast.modules import (
    BidirectionalFlashTransformer,
    BidirectionalTransformer,
    FlashTransformer,
    InstructionPooling,
    LogitScale,
    backbone_models,
    can_pack,
    disable_packing,
    enable_packing,
)
from st_contrast.modules.embedding_tokenizer import pad_with_eos
from st_contrast.modules.eos import bake_eos_into_tokenizer

__all__ = [
    "MODULE_CLASSES",
    "ExportReport",
    "adapter_bases",
    "check_adapter_bases",
    "export_model",
    "load_adapter_model",
    "load_model",
    "relink_adapter_base",
]

logger = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound=SentenceTransformer)

MODULE_CLASSES: tuple[type, ...] = (
    FlashTransformer,
    LogitScale,
    BidirectionalTransformer,
    BidirectionalFlashTransformer,
    InstructionPooling,
)
"""Every module class a model saved by st_contrast may name in its ``modules.json`` (FlashTransformer,
BidirectionalFlashTransformer and LogitScale only in models saved by st_contrast 0.1)."""

_ADAPTER_CONFIG = "adapter_config.json"
_PROBE_TEXTS = (
    "A man is playing a guitar on a small stage.",
    "Two dogs run through the snow.",
    "What is the capital of France?",
    "x",
    "The committee postponed its decision on the new budget until the spring meeting, citing missing figures "
    "from three of the regional offices and an unresolved dispute over pension contributions.",
)


def load_model(
    model_name_or_path: str,
    *,
    packed: bool = True,
    attention_backend: str = "auto",
    model_class: type[ModelT] = SentenceTransformer,
    **kwargs: Any,
) -> ModelT:
    """Load a saved model, packed, keeping ``trust_remote_code=False``.

    Plain models (every model st_contrast saves now) load as Sentence Transformers loads them; then every
    ``Transformer`` module whose architecture supports it is packed (:func:`~st_contrast.modules.enable_packing`),
    which is what makes training and encoding fast. Models whose ``modules.json`` names st_contrast classes
    (LLM2Vec tokenization, ``InstructionPooling``, models saved by st_contrast 0.1) load too: this loader hands
    Sentence Transformers the already imported st_contrast classes (the mechanism its trainer uses to reload its own
    checkpoints), so every other class reference and the backbone keep the normal ``trust_remote_code`` checks.

    Args:
        model_name_or_path: A directory written by ``model.save(...)`` or a hub id.
        packed: Pack every module whose architecture supports it (others stay padded, logged); ``False`` loads
            padded, as plain Sentence Transformers does.
        attention_backend: The packed attention backend (``"auto"``, ``"varlen"``, ``"flash_attn"``, ``"sdpa"``,
            ``"block_diagonal"``).
        model_class: ``SentenceTransformer`` (default) or another Sentence Transformers model class.
        **kwargs: Forwarded to the model class (``device``, ``model_kwargs``, ``trust_remote_code``...).

    Example:
        ::

            import st_contrast

            model = st_contrast.load_model("runs/quickstart/model", device="cpu")  # packed
    """
    check_adapter_bases(model_name_or_path)  # a clear error when a saved adapter's base model is gone
    module_classes = {f"{cls.__module__}.{cls.__name__}": cls for cls in MODULE_CLASSES}
    model = load_with_module_classes(model_class, model_name_or_path, module_classes, **kwargs)
    for module in model.modules():
        if not isinstance(module, Transformer):
            continue
        if not packed:
            disable_packing(module)
        elif can_pack(module):
            enable_packing(module, attention_backend)
        else:
            logger.info("%s stays padded: its architecture is not supported packed.", type(module.model).__name__)
    return model


@dataclass
class ExportReport:
    """What :func:`export_model` wrote.

    Attributes:
        path: The output directory.
        plain: True when ``modules.json`` names only Sentence Transformers classes (loads without st_contrast).
        max_abs_diff: The largest difference between the exported model's embeddings (as ``SentenceTransformer``
            loads it) and the source model's, over the probe texts and the model's prompts; None when not verified.
        notes: Why parts of the model could not be written in the plain form, if any.
    """

    path: str
    plain: bool
    max_abs_diff: float | None
    notes: list[str]


def export_model(
    model: SentenceTransformer | str,
    output_dir: str | os.PathLike,
    *,
    merge_adapters: bool = True,
    verify: bool = True,
    texts: list[str] | None = None,
    atol: float = 1e-5,
) -> ExportReport:
    """Write ``model`` as a plain Sentence Transformers model wherever its settings allow, and check the result.

    What is converted (the source model is not changed):

    - packed modules: nothing to do, packing is never saved;
    - a ``LogitScale`` module (st_contrast 0.1 kept the temperature in the model): dropped;
    - a ``BidirectionalTransformer`` without SGPT brackets: a stock ``Transformer``; bidirectional attention is
      ``is_causal: false`` in ``config.json`` (transformers >= 5.2 builds bidirectional masks from it), and the EOS
      appended after truncation moves into the saved tokenizer's post-processor;
    - ``InstructionPooling``: Sentence Transformers' ``Pooling(include_prompt=False)``, when the model's own prompts
      end on the same token boundary both ways (ST counts the prompt's tokens alone; the instruction-aware module
      finds the boundary in the joint tokenization);
    - LoRA adapters: merged (``merge_adapters=True``), so the model needs neither peft nor its base.

    What cannot be expressed in a stock configuration (SGPT brackets, an instruction boundary that plain ST would
    count differently, a tokenizer whose post-processor cannot append EOS) keeps its st_contrast module, named in
    the report's ``notes``; such a model loads with :func:`load_model`.

    Args:
        model: A ``SentenceTransformer`` or the directory / hub id of a saved one.
        output_dir: Where to write the model.
        merge_adapters: Merge LoRA adapters into the weights (else they are saved as adapters on their base).
        verify: Reload the export as Sentence Transformers does and compare embeddings with the source model.
        texts: Texts for the comparison (default: a few built-in ones of varied length).
        atol: The largest embedding difference accepted by the verification.

    Returns:
        An :class:`ExportReport`.

    Raises:
        ValueError: The verification found embeddings that differ by more than ``atol``.

    Example:
        ::

            import st_contrast

            report = st_contrast.export_model("runs/old-model", "runs/old-model-plain")
            print(report.plain, report.max_abs_diff)
    """
    source = load_model(str(model), packed=False) if not isinstance(model, SentenceTransformer) else model
    exported = copy.deepcopy(source)
    notes: list[str] = []
    for name, module in list(exported.named_children()):
        if isinstance(module, LogitScale):
            del exported._modules[name]
    if merge_adapters and any(has_peft_adapters(backbone) for backbone in backbone_models(exported)):
        from st_contrast.adapters.merging import merge_lora

        merge_lora(exported)
    boundaries_agree = True
    for module in exported.modules():
        if isinstance(module, Transformer):
            disable_packing(module)
        if type(module) is BidirectionalTransformer:
            reason = _to_stock_transformer(module)
            boundaries_agree = boundaries_agree and _prompt_boundaries_agree(module, exported.prompts)
            if reason:
                notes.append(reason)
    for name, module in list(exported.named_children()):
        if type(module) is InstructionPooling:
            if boundaries_agree:
                config = {key: value for key, value in module.get_config_dict().items() if key != "include_prompt"}
                exported._modules[name] = Pooling(**config, include_prompt=False)
                if config.get("pooling_mode") != "lasttoken":
                    checked = sorted(prompt for prompt in (exported.prompts or {}).values() if prompt)
                    notes.append(
                        "InstructionPooling became Pooling(include_prompt=False), which counts a prompt's tokens by "
                        f"tokenizing it alone: checked exact for the model's prompts {checked}. A prompt given only "
                        "at encode time or in the training arguments may share a token with the text (a trailing "
                        "space, with a byte-level BPE tokenizer) and then pool one token less: put it in "
                        "model.prompts before exporting to have it checked."
                    )
            elif module.get_config_dict().get("pooling_mode") != "lasttoken" and not _kept_bidirectional(exported):
                # InstructionPooling reads the exact boundary from BidirectionalTransformer's instruction_mask; the
                # stock Transformer it became sends none, so it would fall back to the very prompt_length that differs.
                raise ValueError(
                    "export_model cannot make this model plain: for one of its prompts, Sentence Transformers' "
                    "prompt_length (the prompt tokenized alone) differs from the instruction boundary in the joint "
                    f"tokenization, and {module.get_config_dict().get('pooling_mode')!r} pooling depends on it. "
                    "Nothing was written. Use a prompt that does not share a token with the text (no trailing space), "
                    "or save the model with model.save and load it with st_contrast.load_model."
                )
            else:
                notes.append(
                    "InstructionPooling kept: for at least one of the model's prompts, Sentence Transformers' "
                    "prompt_length (the prompt tokenized alone) differs from the instruction boundary in the joint "
                    "tokenization, so a stock Pooling would pool different tokens."
                )
    output_dir = str(output_dir)
    exported.save(output_dir)
    plain = _names_only_stock_classes(output_dir)
    max_abs_diff = _verify(source, output_dir, plain, texts, atol) if verify else None
    for note in notes:
        logger.warning("export_model: %s", note)
    return ExportReport(output_dir, plain, max_abs_diff, notes)


def _kept_bidirectional(model: SentenceTransformer) -> bool:
    """Whether a BidirectionalTransformer of ``model`` stayed as it is (it sends InstructionPooling its boundaries)."""
    return any(type(module) is BidirectionalTransformer for module in model.modules())


def _to_stock_transformer(module: BidirectionalTransformer) -> str | None:
    """Turn a BidirectionalTransformer into a stock Transformer in place; the reason when it must stay as it is."""
    if module.sgpt_brackets:
        return "BidirectionalTransformer kept: SGPT brackets are not a Sentence Transformers setting."
    if has_peft_adapters(module.model):
        return (
            "BidirectionalTransformer kept: its LoRA adapters are saved without the base model's config, which is "
            "where a stock Transformer would read is_causal: false; export with merge_adapters=True for a plain model."
        )
    if module.append_eos and not module._embedding_tokenizer.tokenizer_adds_eos:
        if reason := bake_eos_into_tokenizer(module.tokenizer):
            return f"BidirectionalTransformer kept: {reason}"
    module.__class__ = Transformer
    clear_prompt_lengths(module)  # measured with the EOS-appending tokenization of the class it had
    # What the class it had did itself, and a stock Transformer would do otherwise: plain text, not a chat template's
    # messages (Sentence Transformers reads a tokenizer's chat_template as a "message" modality), and padding with
    # EOS where the tokenizer has no pad token (padding is masked out).
    module.modality_config.pop("message", None)
    pad_with_eos(module.tokenizer)
    return None


def _prompt_boundaries_agree(module: Transformer, prompts: dict[str, str]) -> bool:
    from st_contrast.modules import EmbeddingTokenizer

    tokenizer = EmbeddingTokenizer(module.tokenizer, append_eos=False)
    for prompt in {prompt for prompt in (prompts or {}).values() if prompt}:
        exact = tokenizer([text for text in _PROBE_TEXTS], instruction=prompt).instruction_lengths
        if any(length != prompt_length(module, prompt) for length in exact):
            return False
    return True


def _names_only_stock_classes(output_dir: str) -> bool:
    modules = json.loads((Path(output_dir) / "modules.json").read_text())
    return all(entry["type"].startswith("sentence_transformers.") for entry in modules)


@torch.no_grad()
def _verify(source: SentenceTransformer, output_dir: str, plain: bool, texts: list[str] | None, atol: float) -> float:
    texts = list(texts or _PROBE_TEXTS)
    device = source.device
    reloaded = (
        SentenceTransformer(output_dir, device=str(device), trust_remote_code=False)
        if plain
        else load_model(output_dir, packed=False, device=str(device))
    )
    worst = 0.0
    for prompt in [None, *sorted({p for p in (source.prompts or {}).values() if p})]:
        expected = source.encode(texts, prompt=prompt, convert_to_tensor=True)
        got = reloaded.encode(texts, prompt=prompt, convert_to_tensor=True)
        worst = max(worst, float((expected.float() - got.float()).abs().max()))
    if worst > atol:
        raise ValueError(
            f"The exported model in {output_dir} gives embeddings up to {worst:.2e} away from the source model's "
            f"(tolerance {atol:g}). Please report this; load the source with st_contrast.load_model meanwhile."
        )
    return worst


def adapter_bases(model_dir: str | Path) -> dict[str, str]:
    """The base model each adapter in a saved model directory was trained on.

    A model saved with LoRA adapters holds only the adapter weights; the base is loaded from the
    ``base_model_name_or_path`` that peft wrote into each ``adapter_config.json`` (one per
    backbone, e.g. both towers of a ``Router``).

    Args:
        model_dir: A directory written by ``model.save(...)``.

    Returns:
        ``{adapter directory (relative to model_dir): base model path or hub id}``; empty without adapters.
    """
    root = Path(model_dir)
    return {
        str(config.parent.relative_to(root)): json.loads(config.read_text())["base_model_name_or_path"]
        for config in sorted(root.rglob(_ADAPTER_CONFIG))
    }


def check_adapter_bases(model_dir: str | Path) -> None:
    """Raise a clear error when a saved adapter model cannot be reloaded.

    :class:`~st_contrast.compat.CompatibilityError` when the installed transformers refuses the installed peft,
    ``FileNotFoundError`` when an adapter's local base model is gone (without this check the
    loader treats the missing path as a hub id and fails with an unrelated "Repo id must be in the
    form ..." message; hub ids are left to the normal loader), ``ValueError`` for adapters inside a
    ``Router`` tower, which sentence-transformers 6.2 cannot reload.

    Args:
        model_dir: A directory written by ``model.save(...)``.
    """
    bases = adapter_bases(model_dir)
    if bases:
        require_adapter_support()
    for adapter_dir, base in bases.items():
        if adapter_dir != ".":
            raise ValueError(
                f"The adapter in {Path(model_dir) / adapter_dir} sits in a module subfolder (a Router tower): "
                "sentence-transformers 6.2 looks for the base model's weights in that same subfolder of the base, "
                "so it cannot reload it. Save such models with st_contrast.adapters.merge_and_save instead."
            )
        if not base:
            raise FileNotFoundError(
                f"The adapter in {Path(model_dir) / adapter_dir} records no base model. Point it at one with "
                f"st_contrast.relink_adapter_base({str(model_dir)!r}, '<base model path or hub id>')."
            )
        if _looks_local(base) and not os.path.isdir(base):
            raise FileNotFoundError(
                f"The adapter in {Path(model_dir) / adapter_dir} was trained on the base model {base!r}, which no "
                "longer exists. Restore the base model there, or point the adapter at its new location with "
                f"st_contrast.relink_adapter_base({str(model_dir)!r}, '<new base path or hub id>'). "
                "To ship a model without its base, save it with st_contrast.adapters.merge_and_save."
            )


def relink_adapter_base(model_dir: str | Path, base_model_name_or_path: str) -> None:
    """Point every adapter in a saved model directory at a base model that moved.

    Args:
        model_dir: A directory written by ``model.save(...)`` with adapters.
        base_model_name_or_path: The base model's new local directory (made absolute) or hub id.

    Example:
        ::

            import st_contrast

            st_contrast.relink_adapter_base("output/minilm-lora", "/models/all-MiniLM-L6-v2")
    """
    configs = sorted(Path(model_dir).rglob(_ADAPTER_CONFIG))
    if not configs:
        raise ValueError(f"{model_dir} holds no {_ADAPTER_CONFIG}: it is not a saved adapter model.")
    base = (
        os.path.abspath(base_model_name_or_path) if os.path.isdir(base_model_name_or_path) else base_model_name_or_path
    )
    for config_path in configs:
        config = json.loads(config_path.read_text())
        config["base_model_name_or_path"] = base
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def load_adapter_model(model_dir: str | Path, *, trainable: bool = False, **kwargs: Any) -> SentenceTransformer:
    """Load a saved adapter model through :func:`load_model`, which checks its base models first.

    Reloaded adapters are in inference mode; ``trainable=True`` makes them trainable again to
    continue training (the base weights stay frozen).

    Args:
        model_dir: A directory written by ``model.save(...)`` with adapters.
        trainable: Enable gradients on the reloaded adapters.
        **kwargs: Forwarded to :func:`load_model` (``packed``, ``device``, ``model_kwargs``...).

    Returns:
        The model, with its adapters loaded on its backbones.

    Example:
        ::

            import st_contrast

            model = st_contrast.load_adapter_model("output/minilm-lora", trainable=True, device="cpu")
    """
    from peft.functional import set_requires_grad

    model = load_model(str(model_dir), **kwargs)
    if trainable:
        for backbone in backbone_models(model):
            if has_peft_adapters(backbone):
                set_requires_grad(backbone, list(peft_configs(backbone)), requires_grad=True)
    return model


def _looks_local(name_or_path: str) -> bool:
    """A filesystem path rather than a hub id (``name`` or ``namespace/name``)."""
    return os.path.isabs(name_or_path) or name_or_path.startswith((".", "~")) or name_or_path.count("/") > 1
