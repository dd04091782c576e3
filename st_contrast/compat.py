"""Version compatibility of the libraries st_contrast stands on, and every private hook it uses in them.

**Adapter support.** transformers' adapter integration (``model.add_adapter``, adapter-only ``save_pretrained``, and
the loading of a saved adapter by plain ``SentenceTransformer(dir)``) refuses to run when the installed peft is older
than the floor that transformers release declares (``MIN_PEFT_VERSION``). Every transformers release may raise that
floor before peft publishes a release that meets it, so a fresh install can resolve a pair that installs fine
and fails at the first LoRA call. :func:`adapter_support_problem` reads the floor of the installed
transformers, compares it with the installed peft, and says what to install instead.

**Upstream hooks.** st_contrast reaches into private or undocumented parts of sentence-transformers, transformers,
accelerate, mteb, peft, datasets and torch in a few places (ST's flattened text path, its pooling internals, the
trainer's checkpoint hooks...). Every such access goes through a small function here, or, for methods that
st_contrast overrides and for attributes read inside those libraries, is listed in :data:`HOOKS`.
:func:`hook_problem` checks one entry against the installed release (``tests/test_compat.py`` checks them all), so a
release that removes or changes a hook fails with a message that names it.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from packaging.version import Version

__all__ = [
    "CHECKED_ON",
    "HOOKS",
    "SAMPLER_WRAPPER_ATTRIBUTES",
    "CompatibilityError",
    "Hook",
    "KNOWN_PEFT_FLOORS",
    "accelerate_state_exists",
    "adapter_support_problem",
    "attn_implementation",
    "clear_prompt_lengths",
    "dataset_fingerprint",
    "embed_columns",
    "flatten_inputs",
    "flatten_position_offset",
    "flattens_inputs",
    "forget_peft_adapters",
    "forward_params",
    "has_peft_adapters",
    "hook_problem",
    "in_encode",
    "is_persistent_buffer",
    "load_checkpoint_weights",
    "load_with_module_classes",
    "model_position_offset",
    "peft_configs",
    "pool_flattened",
    "pool_padded",
    "prompt_length",
    "register_attention_function",
    "require_adapter_support",
    "sequences_in",
    "restore_padded_inputs",
    "should_flatten_inputs",
    "trainer_output_dir",
    "training_progress_bar",
    "transformers_min_peft_version",
]

KNOWN_PEFT_FLOORS: dict[str, str] = {
    "5.2.0": "0.18.0",
    "5.17.0": "0.19.1",
    "5.20.0": "0.20.0",
    "5.24.0": "0.22.0",
}
"""transformers release -> the peft floor its adapter integration enforces from that release on (used when the
installed transformers does not expose ``MIN_PEFT_VERSION``)."""


class CompatibilityError(RuntimeError):
    """The installed library versions cannot run the requested feature; the message says what to install."""


def _installed(package: str) -> Version | None:
    try:
        return Version(metadata.version(package))
    except metadata.PackageNotFoundError:
        return None


def transformers_min_peft_version() -> Version | None:
    """The oldest peft the installed transformers' adapter integration accepts (None without transformers)."""
    transformers_version = _installed("transformers")
    if transformers_version is None:
        return None
    try:
        from transformers.integrations.peft import MIN_PEFT_VERSION

        return Version(MIN_PEFT_VERSION)
    except (ImportError, AttributeError):
        floors = [
            Version(peft) for release, peft in KNOWN_PEFT_FLOORS.items() if Version(release) <= transformers_version
        ]
        return max(floors) if floors else None


def _declared_transformers_range() -> str | None:
    """The transformers requirement st_contrast declares (its install metadata), e.g. ``transformers<5.24,>=5.2``."""
    try:
        requirements = metadata.requires("st-contrast") or []
    except metadata.PackageNotFoundError:
        return None
    for requirement in requirements:
        name = requirement.split(";")[0].strip()
        if name.lower().startswith("transformers") and not name[len("transformers") :][:1].isalnum():
            return name.replace(" ", "")
    return None


def adapter_support_problem() -> str | None:
    """Why LoRA adapters cannot be added, saved or loaded with the installed transformers and peft, or None.

    Returns:
        A one-line explanation with the command that fixes it, or ``None`` when the pair works.
    """
    peft_version = _installed("peft")
    transformers_version = _installed("transformers")
    if peft_version is None:
        return "peft is not installed, and LoRA adapters need it: pip install 'peft>=0.18'."
    floor = transformers_min_peft_version()
    if floor is None or peft_version >= floor:
        return None
    declared = _declared_transformers_range()
    downgrade = f"pip install '{declared}'" if declared else "pip install an older transformers release"
    return (
        f"transformers {transformers_version} needs peft >= {floor} for LoRA adapters, but peft {peft_version} is "
        f"installed (the newest peft release may not meet that floor yet). Fix: pip install -U 'peft>={floor}' when "
        f"that release exists, otherwise {downgrade} (the range st_contrast is tested with)."
    )


def require_adapter_support() -> None:
    """Raise :class:`CompatibilityError` (one line, with the fix) when :func:`adapter_support_problem` finds one."""
    if problem := adapter_support_problem():
        raise CompatibilityError(problem)


# --- Upstream hooks -------------------------------------------------------------------------------------------------
# Each function below is the one place st_contrast touches the private or undocumented hook its docstring names.
# "Checked on" names the releases whose code was read and whose tests pass; tests/test_compat.py checks every entry of
# HOOKS against the installed release.

CHECKED_ON: dict[str, tuple[str, ...]] = {
    "sentence-transformers": ("6.0.1", "6.2.0"),
    "transformers": ("5.17.0", "5.23.0"),
    "accelerate": ("1.15.0",),
    "mteb": ("2.26.24",),
    "peft": ("0.21.2",),
    "datasets": ("5.2.0",),
    "torch": ("2.13.0",),
}
"""Distribution -> the releases the hooks in :data:`HOOKS` were checked on (the oldest and newest where two)."""


def load_with_module_classes(model_class: type, model_name_or_path: str, module_classes: dict[str, type], **kwargs):
    """Load a saved model, resolving the ``modules.json`` types in ``module_classes`` to those imported classes.

    Hook: ``BaseModel._load_with_module_classes`` (what ST's trainer uses to reload its own checkpoints), so that
    :func:`st_contrast.load_model` loads models naming st_contrast modules without ``trust_remote_code``; every type not
    in ``module_classes`` keeps the normal gate. Checked on sentence-transformers 6.0.1 and 6.2.0.
    """
    loader = getattr(model_class, "_load_with_module_classes", None)
    if loader is None:
        raise CompatibilityError(
            f"sentence-transformers {_installed('sentence-transformers')} has no "
            f"{model_class.__name__}._load_with_module_classes, which st_contrast.load_model needs for models that "
            f"name st_contrast modules. Install the range st_contrast declares, or load with "
            f"{model_class.__name__}({model_name_or_path!r}, trust_remote_code=True) after checking the directory."
        )
    return loader(model_name_or_path, module_classes, **kwargs)


def attn_implementation(config: Any) -> str | None:
    """The attention implementation a transformers model config selects.

    Hook: ``PretrainedConfig._attn_implementation``; :func:`~st_contrast.modules.enable_packing` records it to restore
    the padded implementation in :func:`~st_contrast.modules.disable_packing`. Checked on transformers 5.17 and 5.23.
    """
    return config._attn_implementation


def flatten_inputs(module: Any, data_collator: Any, forward_kwargs: Iterable[str]) -> None:
    """Switch a Sentence Transformers ``Transformer`` to its flattened (padding-free) text path.

    Hooks (ST ``Transformer``): ``data_collator``, ``model_forward_params`` (the forward kwargs it passes on; the
    packed ones are added), ``_flatten_position_offset = _infer_flatten_position_offset()`` (RoBERTa-family
    positions) and ``can_flatten_inputs = True``: what ST's own ``_can_flatten_inputs`` does when ``flash_attn``
    imports, used by :func:`~st_contrast.modules.enable_packing`. Checked on sentence-transformers 6.0.1 and 6.2.0.
    """
    module.data_collator = data_collator
    if module.model_forward_params is not None:
        module.model_forward_params |= set(forward_kwargs)
    module._flatten_position_offset = module._infer_flatten_position_offset()
    module.can_flatten_inputs = True


def model_position_offset(model: Any) -> int:
    """The offset ST adds to flattened ``position_ids`` for a bare transformers ``model`` (RoBERTa family:
    ``padding_idx + 1``, else 0).

    Hook: ``Transformer._infer_flatten_position_offset``, which reads only ``self.model``; called here on a stand-in
    holding ``model``, for st_contrast's packed MLM batches (:mod:`st_contrast.pretraining`). Checked on
    sentence-transformers 6.0.1 and 6.2.0.
    """
    from types import SimpleNamespace

    from sentence_transformers.base.modules import Transformer

    return Transformer._infer_flatten_position_offset(SimpleNamespace(model=model))


def forward_params(module: Any) -> set[str] | None:
    """A copy of the forward kwargs a ST ``Transformer`` passes to its model (None: all of them).

    Hook: ``Transformer.model_forward_params``, recorded by :func:`~st_contrast.modules.enable_packing` for
    :func:`restore_padded_inputs`. Checked on sentence-transformers 6.0.1 and 6.2.0.
    """
    return None if module.model_forward_params is None else set(module.model_forward_params)


def restore_padded_inputs(module: Any, forward_params: set[str] | None) -> None:
    """Undo :func:`flatten_inputs`: the recorded forward kwargs, and ST's own decision whether to flatten.

    Hooks: ``Transformer.model_forward_params``, and the ``unpad_inputs`` setter, which re-evaluates
    ``can_flatten_inputs`` (used by :func:`~st_contrast.modules.disable_packing`). Checked on sentence-transformers
    6.0.1 and 6.2.0.
    """
    if forward_params is not None:
        module.model_forward_params = set(forward_params)
    module.unpad_inputs = module.unpad_inputs


def flattens_inputs(module: Any) -> bool:
    """Whether a ST ``Transformer`` flattens text batches (hook: ``Transformer.can_flatten_inputs``; read by
    :func:`~st_contrast.modules.is_packed`). Checked on sentence-transformers 6.0.1 and 6.2.0."""
    return module.can_flatten_inputs


def should_flatten_inputs(module: Any, modality: str, processor_inputs: dict[str, Any], **kwargs: Any) -> bool:
    """Whether a ST ``Transformer`` flattens this batch (hook: ``Transformer._should_flatten_inputs``;
    :class:`~st_contrast.modules.BidirectionalTransformer` tokenizes itself and asks it the same question).
    Checked on sentence-transformers 6.0.1 and 6.2.0."""
    return module._should_flatten_inputs(modality, processor_inputs, **kwargs)


def flatten_position_offset(module: Any) -> int:
    """The offset ST adds to flattened ``position_ids`` (hook: ``Transformer._flatten_position_offset``, set when it
    flattens; 0 before), for :class:`~st_contrast.modules.BidirectionalTransformer`'s own collation. Checked on
    sentence-transformers 6.0.1 and 6.2.0."""
    return getattr(module, "_flatten_position_offset", 0)


def prompt_length(module: Any, prompt: str) -> int | None:
    """The number of tokens ST's ``Pooling(include_prompt=False)`` drops for ``prompt`` (hook:
    ``Transformer._get_prompt_length``; :func:`~st_contrast.export_model` compares it with the exact instruction
    boundaries). Checked on sentence-transformers 6.0.1 and 6.2.0."""
    return module._get_prompt_length(prompt)


def clear_prompt_lengths(module: Any) -> None:
    """Forget the prompt lengths a ST ``Transformer`` cached (hook: ``Transformer._prompt_length_mapping``;
    :func:`~st_contrast.export_model` changes a module's tokenization). Checked on sentence-transformers 6.0.1 and
    6.2.0."""
    module._prompt_length_mapping = {}


def in_encode() -> bool:
    """Whether the current forward pass runs inside ``SentenceTransformer.encode`` (as far as it can tell).

    Hook: ``SentenceTransformer.encode`` embeds under ``torch.inference_mode`` (6.2: inside ``_inference``; 6.0:
    in ``encode`` itself) and, for ``output_value="token_embeddings"``, reads ``out_features["attention_mask"]`` row
    by row beside ``token_embeddings``; packed modules hand on padded outputs there
    (:mod:`st_contrast.modules.packed_outputs`). Training and ``torch.no_grad`` passes are not inference mode.
    Checked on sentence-transformers 6.0.1 and 6.2.0.
    """
    import torch

    return torch.is_inference_mode_enabled()


def pool_padded(pooling: Any, token_embeddings: Any, attention_mask: Any, features: dict[str, Any]) -> list[Any]:
    """ST ``Pooling``'s own pooling of a padded batch under ``attention_mask`` (hook: ``Pooling._forward_padded``;
    :class:`~st_contrast.modules.InstructionPooling` masks out per-row instructions first). Checked on
    sentence-transformers 6.0.1 and 6.2.0."""
    return pooling._forward_padded(token_embeddings, attention_mask, features)


def pool_flattened(pooling: Any, token_embeddings: Any, features: dict[str, Any]) -> list[Any]:
    """ST ``Pooling``'s own pooling of a flattened batch (``features["cu_seq_lens_q"]``) (hook:
    ``Pooling._forward_flattened``; used by :class:`~st_contrast.modules.InstructionPooling`). Checked on
    sentence-transformers 6.0.1 and 6.2.0."""
    return pooling._forward_flattened(token_embeddings, features)


def embed_columns(model: Any, features_list: Iterable[dict[str, Any]]) -> list[Any]:
    """One ``sentence_embedding`` tensor per input column, the way ST's own losses embed them (hook:
    ``sentence_transformers.base.losses.merged_forward.embed_columns``, an undocumented module; used by SigLIP and
    the global contrastive loss). Checked on sentence-transformers 6.0.1 and 6.2.0."""
    from sentence_transformers.base.losses.merged_forward import embed_columns as _embed_columns

    return _embed_columns(model, features_list)


def sequences_in(features: dict[str, Any]) -> int:
    """The number of texts in one column's features, padded or flattened (hook: ST's GradCache
    ``_get_batch_size``, which its mini-batching uses). Checked on sentence-transformers 6.0.1 and 6.2.0."""
    from sentence_transformers.base.losses.gradcache import _get_batch_size

    return _get_batch_size(features)


def register_attention_function(name: str, function: Any) -> None:
    """Register an attention function and transformers' flash-attention mask builder under ``name``.

    Hooks: ``AttentionInterface.register`` and ``transformers.masking_utils.ALL_MASK_ATTENTION_FUNCTIONS`` /
    ``flash_attention_mask`` (None for unpadded inputs, the 2-D padding mask otherwise), so st_contrast's packed
    kernels are ``attn_implementation`` names. Checked on transformers 5.17 and 5.23.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, flash_attention_mask

    AttentionInterface.register(name, function)
    ALL_MASK_ATTENTION_FUNCTIONS.register(name, flash_attention_mask)


def has_peft_adapters(model: Any) -> bool:
    """Whether transformers' adapter integration holds adapters on ``model`` (hook:
    ``PeftAdapterMixin._hf_peft_config_loaded``). Checked on transformers 5.17 and 5.23."""
    return bool(getattr(model, "_hf_peft_config_loaded", False))


def peft_configs(model: Any) -> dict[str, Any]:
    """``{adapter name: peft config}`` of a model with adapters (hook: ``PeftAdapterMixin.peft_config``; used to
    make the recorded base path absolute and to re-enable training). Checked on transformers 5.17 and 5.23."""
    return model.peft_config


def forget_peft_adapters(model: Any) -> None:
    """Tell transformers' adapter integration that ``model`` holds no adapters any more, after merging them (hooks:
    ``PeftAdapterMixin.peft_config`` and ``_hf_peft_config_loaded``), so it saves as a full model. Checked on
    transformers 5.17 and 5.23."""
    del model.peft_config
    model._hf_peft_config_loaded = False


def trainer_output_dir(trainer: Any, trial: Any) -> str:
    """The run directory the trainer writes checkpoints to (hook: ``Trainer._get_output_dir(trial)``; the loss state
    goes into the same checkpoint folder). Checked on transformers 5.17 and 5.23."""
    return trainer._get_output_dir(trial=trial)


def load_checkpoint_weights(trainer: Any, checkpoint: str) -> None:
    """Load a checkpoint's model weights into the trainer's model (hook: ``BaseTrainer._load_from_checkpoint``,
    Sentence Transformers' own checkpoint reload; used when a run stopped after its final checkpoint). Checked on
    sentence-transformers 6.0.1 and 6.2.0."""
    trainer._load_from_checkpoint(checkpoint)


def training_progress_bar(callback: Any) -> Any:
    """The tqdm bar of transformers' ``ProgressCallback`` during training, or None (hook:
    ``ProgressCallback.training_bar``; monitoring shows throughput in its postfix, an error closes it). Checked on
    transformers 5.17 and 5.23."""
    return getattr(callback, "training_bar", None)


def accelerate_state_exists() -> bool:
    """Whether someone created accelerate's process state, without creating one (hook:
    ``PartialState._shared_state``; samplers read the world size from it). Checked on accelerate 1.15."""
    try:
        from accelerate.state import PartialState
    except ImportError:  # pragma: no cover - accelerate is a dependency
        return False
    return bool(PartialState._shared_state)


def dataset_fingerprint(dataset: Any) -> str | None:
    """A ``datasets.Dataset``'s content fingerprint, or None (hook: ``Dataset._fingerprint``; salts the token-budget
    sampler's shuffles per dataset). Checked on datasets 5.2."""
    return getattr(dataset, "_fingerprint", None)


def is_persistent_buffer(module: Any, name: str) -> bool:
    """Whether ``module``'s own buffer ``name`` goes into its ``state_dict`` (hook: torch's
    ``Module._non_persistent_buffers_set``; the checkpointed loss state skips the others). Checked on torch 2.13."""
    return name not in module._non_persistent_buffers_set


SAMPLER_WRAPPER_ATTRIBUTES: tuple[str, ...] = ("batch_sampler", "sampler", "base_dataloader", "_loader", "dataloader")
"""Attributes through which accelerate's and transformers' data-loader wrappers (``DataLoaderShard.base_dataloader``,
``SkipBatchSampler.batch_sampler``, ``BatchSamplerShard.batch_sampler``...) reach the sampler they wrap;
:func:`~st_contrast.data.set_sampler_epoch` follows them. Checked on accelerate 1.15 and transformers 5.17 and 5.23."""


# --- The registry ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hook:
    """One private or undocumented part of an upstream library that st_contrast relies on.

    Attributes:
        library: The distribution (``"transformers"``), for its version in messages.
        owner: ``"module:Qualname"`` of the class holding the hook, or ``"module"`` for a module-level name.
        attribute: The hook's name on ``owner``.
        kind: ``"override"`` (st_contrast overrides the method: the upstream parameters must be exactly ``params``,
            where ``"**"`` allows further keyword-only ones), ``"method"`` / ``"function"`` (st_contrast calls it with
            ``params``: each must be accepted and no other be required; ``"**kwargs"`` requires a ``**`` parameter),
            ``"attribute"`` (must exist on ``owner`` or be assigned or read in its source) or ``"constant"`` (a
            module-level name that must exist).
        purpose: What st_contrast uses it for.
        params: See ``kind``.
        used_in: The st_contrast files that use it.
        covered_by: Tests that exercise its behaviour, where existence and signature are not enough.
    """

    library: str
    owner: str
    attribute: str
    kind: str
    purpose: str
    params: tuple[str, ...] = ()
    used_in: tuple[str, ...] = ()
    covered_by: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The dotted name, e.g. ``transformers.Trainer._save_checkpoint``."""
        module, _, qualname = self.owner.partition(":")
        return ".".join(part for part in (module, qualname, self.attribute) if part)

    def describe(self) -> str:
        """The hook as st_contrast uses it, e.g. ``transformers.Trainer._save_checkpoint(model, trial)``."""
        if self.kind in ("override", "method", "function"):
            return f"{self.name}({', '.join(self.params)})"
        return self.name


_ST = "sentence-transformers"
_TF = "transformers"
_ST_TRANSFORMER = "sentence_transformers.base.modules:Transformer"
_ST_POOLING = "sentence_transformers.sentence_transformer.modules:Pooling"
_ST_MNRL = "sentence_transformers.sentence_transformer.losses:MultipleNegativesRankingLoss"
_ST_CACHED_MNRL = "sentence_transformers.sentence_transformer.losses:CachedMultipleNegativesRankingLoss"
_TRAINER = "transformers:Trainer"
_PEFT_MIXIN = "transformers.integrations.peft:PeftAdapterMixin"
_PACKING = ("st_contrast/modules/packing.py",)
_PACKING_TESTS = ("tests/test_compat.py", "tests/test_flash_transformer.py")

# fmt: off
HOOKS: tuple[Hook, ...] = (
    # sentence-transformers: the flattened (padding-free) text path of Transformer
    Hook(_ST, _ST_TRANSFORMER, "data_collator", "attribute",
         "collates a flattened batch (DataCollatorWithFlattening)", used_in=_PACKING, covered_by=_PACKING_TESTS),
    Hook(_ST, _ST_TRANSFORMER, "model_forward_params", "attribute",
         "the forward kwargs passed to the model; packing adds cu_seq_lens_q/k, max_length_q/k, seq_idx",
         used_in=_PACKING, covered_by=_PACKING_TESTS),
    Hook(_ST, _ST_TRANSFORMER, "_infer_flatten_position_offset", "method",
         "the RoBERTa-family position offset of flattened position_ids (also of packed MLM batches: it reads only "
         "self.model)", used_in=(*_PACKING, "st_contrast/pretraining/models.py"),
         covered_by=("tests/test_flash_transformer.py", "tests/test_pretraining_packed.py")),
    Hook(_ST, _ST_TRANSFORMER, "_flatten_position_offset", "attribute",
         "the offset ST adds to flattened position_ids (set by packing, read by BidirectionalTransformer)",
         used_in=(*_PACKING, "st_contrast/modules/bidirectional.py"), covered_by=("tests/test_flash_transformer.py",)),
    Hook(_ST, _ST_TRANSFORMER, "can_flatten_inputs", "attribute",
         "switches ST's flattened text path on without flash_attn (is_packed reads it)", used_in=_PACKING,
         covered_by=_PACKING_TESTS),
    Hook(_ST, _ST_TRANSFORMER, "unpad_inputs", "attribute",
         "its setter re-evaluates can_flatten_inputs when packing is switched off", used_in=_PACKING,
         covered_by=_PACKING_TESTS),
    Hook(_ST, "sentence_transformers:SentenceTransformer", "inference_mode", "attribute",
         "encode() embeds under torch.inference_mode (6.2: in _inference) and reads out_features['attention_mask'] "
         "beside token_embeddings; packed modules hand on padded outputs there (in_encode)",
         used_in=("st_contrast/modules/packed_outputs.py",),
         covered_by=("tests/test_compat.py", "tests/test_packed_outputs.py")),
    Hook(_ST, _ST_TRANSFORMER, "_should_flatten_inputs", "method",
         "BidirectionalTransformer tokenizes itself and asks whether the batch is flattened",
         params=("modality", "processor_inputs", "**kwargs"), used_in=("st_contrast/modules/bidirectional.py",),
         covered_by=("tests/test_compat.py", "tests/test_bidirectional.py")),
    Hook(_ST, _ST_TRANSFORMER, "preprocess", "override",
         "BidirectionalTransformer tokenizes plain texts itself (EOS after truncation, instruction mask, SGPT "
         "brackets), reading the task and max_length kwargs ST passes",
         params=("inputs", "prompt", "processing_kwargs"), used_in=("st_contrast/modules/bidirectional.py",),
         covered_by=("tests/test_llm2vec_tokenization.py",)),
    Hook(_ST, _ST_TRANSFORMER, "_get_prompt_length", "method",
         "the prompt length ST's Pooling(include_prompt=False) drops, compared by export_model", params=("prompt",),
         used_in=("st_contrast/model_io.py",), covered_by=("tests/test_compat.py", "tests/test_model_export.py")),
    Hook(_ST, _ST_TRANSFORMER, "_prompt_length_mapping", "attribute",
         "ST's prompt-length cache, cleared when export_model changes a module's tokenization",
         used_in=("st_contrast/model_io.py",), covered_by=("tests/test_compat.py", "tests/test_model_export.py")),
    # sentence-transformers: pooling, model loading, losses, trainer, samplers
    Hook(_ST, _ST_POOLING, "_forward_padded", "method", "InstructionPooling pools with ST's own code",
         params=("token_embeddings", "attention_mask", "features"),
         used_in=("st_contrast/modules/instruction_pooling.py",),
         covered_by=("tests/test_compat.py", "tests/test_llm2vec_tokenization.py")),
    Hook(_ST, _ST_POOLING, "_forward_flattened", "method", "InstructionPooling pools packed rows with ST's own code",
         params=("token_embeddings", "features"), used_in=("st_contrast/modules/instruction_pooling.py",),
         covered_by=("tests/test_compat.py", "tests/test_llm2vec_tokenization.py")),
    Hook(_ST, "sentence_transformers.base.model:BaseModel", "_load_with_module_classes", "method",
         "load_model resolves st_contrast module classes without trust_remote_code",
         params=("model_name_or_path", "module_classes", "**kwargs"), used_in=("st_contrast/model_io.py",),
         covered_by=("tests/test_model_export.py",)),
    Hook(_ST, "sentence_transformers.base.losses.merged_forward", "embed_columns", "function",
         "SigLIP and the global contrastive loss embed their columns as ST's losses do",
         params=("model", "features_list"),
         used_in=("st_contrast/losses/siglip.py", "st_contrast/losses/global_contrastive.py"),
         covered_by=("tests/test_losses_siglip_clip.py", "tests/test_losses_global_contrastive.py")),
    Hook(_ST, _ST_CACHED_MNRL, "loss", "attribute",
         "the wrapped MNRL that owns the hyperparameters; CachedInfoNCELoss swaps in an InfoNCELoss",
         used_in=("st_contrast/losses/cached_info_nce.py",),
         covered_by=("tests/test_compat.py", "tests/test_losses_info_nce.py")),
    Hook(_ST, _ST_CACHED_MNRL, "calculate_loss", "override",
         "CachedInfoNCELoss collects the learned scale's gradient over the loss chunks",
         params=("reps", "labels", "with_backward"), used_in=("st_contrast/losses/cached_info_nce.py",),
         covered_by=("tests/test_losses_info_nce.py",)),
    Hook(_ST, _ST_CACHED_MNRL, "forward", "override",
         "CachedInfoNCELoss embeds a batch no larger than one mini-batch once, with gradients, before GradCache",
         params=("sentence_features", "labels"), used_in=("st_contrast/losses/cached_info_nce.py",),
         covered_by=("tests/test_losses_info_nce.py",)),
    Hook(_ST, _ST_CACHED_MNRL, "embed_minibatch", "override",
         "CachedInfoNCELoss keeps the first mini-batch's graph from the first pass and hands it to the backward "
         "hook, which embeds each column's mini-batches again, in order, from the same feature dicts",
         params=("sentence_feature", "begin", "end", "with_grad", "copy_random_state", "random_state"),
         used_in=("st_contrast/losses/cached_info_nce.py",), covered_by=("tests/test_losses_info_nce.py",)),
    Hook(_ST, "sentence_transformers.base.losses.gradcache", "_get_batch_size", "function",
         "the number of texts of a padded or flattened column (sequences_in)", params=("sentence_feature",),
         used_in=("st_contrast/losses/cached_info_nce.py",), covered_by=("tests/test_losses_info_nce.py",)),
    Hook(_ST, _ST_MNRL, "scale", "attribute",
         "InfoNCELoss turns it into a property (the learned, rank-synced scale): MNRL must assign it in __init__ "
         "and read self.scale when it scores", used_in=("st_contrast/losses/info_nce.py",),
         covered_by=("tests/test_losses_info_nce.py",)),
    Hook(_ST, _ST_MNRL, "compute_loss_from_embeddings", "override",
         "InfoNCELoss scopes the false-negative detector around it",
         params=("embeddings", "labels"), used_in=("st_contrast/losses/info_nce.py",),
         covered_by=("tests/test_losses_glofnd.py",)),
    Hook(_ST, "sentence_transformers:SentenceTransformerTrainer", "should_dataset_name_column_be_added", "override",
         "MonitoringMixin adds the dataset_name column to every DatasetDict (per-dataset token counts)",
         params=("dataset", "args", "loss"), used_in=("st_contrast/callbacks/trainer_mixin.py",),
         covered_by=("tests/test_callbacks_training.py",)),
    Hook(_ST, "sentence_transformers.base.sampler:MultiDatasetDefaultBatchSampler", "__init__", "override",
         "SingleDatasetBatchSampler takes what ST passes but does not call it (it would hand torch's BatchSampler "
         "batch_size=None); it sets the same attributes itself",
         params=("dataset", "batch_samplers", "generator", "seed"),
         used_in=("st_contrast/data/single_dataset.py",), covered_by=("tests/test_data_samplers.py",)),
    # transformers: Trainer hooks
    Hook(_TF, _TRAINER, "_save_checkpoint", "override",
         "ContrastiveTrainer stages each checkpoint (loss_state.pt and a manifest included) and renames it into "
         "place when complete",
         params=("model", "trial"), used_in=("st_contrast/training/trainer.py",),
         covered_by=("tests/test_training_resume.py", "tests/test_checkpoint_crashes.py")),
    Hook(_ST, "sentence_transformers.base.trainer:BaseTrainer", "_load_from_checkpoint", "method",
         "load_checkpoint_weights: a run stopped after its final checkpoint takes the weights from it",
         params=("checkpoint_path",), used_in=("st_contrast/training/trainer.py",),
         covered_by=("tests/test_checkpoint_crashes.py",)),
    Hook(_TF, _TRAINER, "_get_output_dir", "override",
         "the run directory holding the checkpoint folders; ContrastiveTrainer returns the staging area while the "
         "upstream save writes a checkpoint",
         params=("trial",), used_in=("st_contrast/training/trainer.py",),
         covered_by=("tests/test_training_resume.py", "tests/test_checkpoint_crashes.py")),
    Hook(_TF, _TRAINER, "_load_optimizer_and_scheduler", "override",
         "ContrastiveTrainer restores loss_state.pt on every resume path (plain, DeepSpeed, FSDP)",
         params=("checkpoint",), used_in=("st_contrast/training/trainer.py",),
         covered_by=("tests/test_training_resume.py",)),
    Hook(_TF, _TRAINER, "get_batch_samples", "override", "MonitoringMixin times the data wait and counts tokens",
         params=("epoch_iterator", "num_batches", "device"), used_in=("st_contrast/callbacks/trainer_mixin.py",),
         covered_by=("tests/test_callbacks_training.py",)),
    Hook(_TF, _TRAINER, "training_step", "override", "MonitoringMixin times forward + backward",
         params=("model", "inputs", "num_items_in_batch"), used_in=("st_contrast/callbacks/trainer_mixin.py",),
         covered_by=("tests/test_callbacks_training.py",)),
    Hook(_TF, _TRAINER, "log", "override", "MonitoringMixin merges the callbacks' metrics into each training log",
         params=("logs", "start_time"), used_in=("st_contrast/callbacks/trainer_mixin.py",),
         covered_by=("tests/test_callbacks_training.py",)),
    Hook(_TF, "transformers.trainer_callback:ProgressCallback", "training_bar", "attribute",
         "monitoring shows throughput in the progress bar's postfix; ContrastiveTrainer closes it when training "
         "stops on an error, so the one-line error starts its own line",
         used_in=("st_contrast/callbacks/trainer_mixin.py", "st_contrast/training/trainer.py"),
         covered_by=("tests/test_cli_streaming.py",)),
    Hook(_TF, "transformers:TrainerState", "stateful_callbacks", "attribute",
         "ThroughputMonitor restores its cumulative counters from {name: {'attributes': ...}} on resume",
         used_in=("st_contrast/callbacks/throughput.py",), covered_by=("tests/test_callbacks_training.py",)),
    # transformers: attention, masks, bidirectionality, adapters, masking collator
    Hook(_TF, "transformers:PretrainedConfig", "_attn_implementation", "attribute",
         "packing records the padded attention implementation to restore it", used_in=_PACKING,
         covered_by=("tests/test_compat.py",)),
    Hook(_TF, "transformers.masking_utils", "ALL_MASK_ATTENTION_FUNCTIONS", "constant",
         "the packed attention implementations register transformers' flash-attention mask builder",
         used_in=("st_contrast/attention/interface.py",), covered_by=("tests/test_flash_transformer.py",)),
    Hook(_TF, "transformers.masking_utils", "flash_attention_mask", "constant",
         "the mask builder of the packed implementations (None unpadded, else the 2-D padding mask)",
         used_in=("st_contrast/attention/interface.py",), covered_by=("tests/test_flash_transformer.py",)),
    Hook(_TF, "transformers.masking_utils", "is_causal", "attribute",
         "config.is_causal = False makes the mask builders (and the attention kwargs) bidirectional",
         used_in=("st_contrast/modules/bidirectional.py",), covered_by=("tests/test_bidirectional.py",)),
    Hook(_TF, _PEFT_MIXIN, "_hf_peft_config_loaded", "attribute", "whether a backbone holds LoRA adapters",
         used_in=("st_contrast/model_io.py", "st_contrast/adapters/merging.py", "st_contrast/pretraining/training.py"),
         covered_by=("tests/test_adapters_lora.py", "tests/test_model_export.py")),
    Hook(_TF, _PEFT_MIXIN, "peft_config", "attribute",
         "the adapters' configs: base path made absolute, training re-enabled, dropped after merging",
         used_in=("st_contrast/adapters/lora.py", "st_contrast/adapters/merging.py", "st_contrast/model_io.py"),
         covered_by=("tests/test_adapters_lora.py",)),
    Hook(_TF, "transformers.integrations.peft", "MIN_PEFT_VERSION", "constant",
         "the peft floor of the adapter integration (KNOWN_PEFT_FLOORS is the fallback)",
         used_in=("st_contrast/compat.py",), covered_by=("tests/test_compat.py",)),
    Hook(_TF, "transformers:DataCollatorForLanguageModeling", "torch_mask_tokens", "override",
         "MaskingCollator never masks position 0 for MNTP",
         params=("inputs", "special_tokens_mask", "offset_mapping"),
         used_in=("st_contrast/pretraining/masking.py",), covered_by=("tests/test_pretraining.py",)),
    # accelerate, datasets, mteb, peft, torch
    Hook("accelerate", "accelerate.state:PartialState", "_shared_state", "attribute",
         "the world size, read only when someone created the state", used_in=("st_contrast/data/single_dataset.py",)),
    Hook("accelerate", "accelerate.data_loader:DataLoaderShard", "base_dataloader", "attribute",
         "set_sampler_epoch reaches the sampler behind accelerate's loader",
         used_in=("st_contrast/data/single_dataset.py",), covered_by=("tests/test_data_samplers.py",)),
    Hook("accelerate", "accelerate.data_loader:SkipBatchSampler", "batch_sampler", "attribute",
         "set_sampler_epoch reaches the sampler behind a resumed epoch's skip wrapper",
         used_in=("st_contrast/data/single_dataset.py",), covered_by=("tests/test_data_samplers.py",)),
    Hook("datasets", "datasets:Dataset", "_fingerprint", "attribute",
         "salts the token-budget shuffles per dataset", used_in=("st_contrast/data/token_budget.py",)),
    Hook("mteb", "mteb.abstasks.retrieval:AbsTaskRetrieval", "load_data", "override",
         "LocalRetrievalTask builds self.dataset = {'default': {split: {'corpus', 'queries', 'relevant_docs', "
         "'top_ranked'}}} from memory", params=("num_proc", "**"), used_in=("st_contrast/evaluation/retrieval.py",),
         covered_by=("tests/test_evaluation_retrieval.py",)),
    Hook("mteb", "mteb.abstasks.sts:AbsTaskSTS", "load_data", "override",
         "LocalSTSTask builds self.dataset = DatasetDict({split: sentence1/sentence2/score}) from memory",
         params=("num_proc", "**"), used_in=("st_contrast/evaluation/sts.py",),
         covered_by=("tests/test_evaluation_sts.py",)),
    Hook("mteb", "mteb.abstasks.abstask:AbsTask", "unload_data", "override",
         "local tasks drop their datasets and keep their records",
         used_in=("st_contrast/evaluation/sts.py", "st_contrast/evaluation/retrieval.py"),
         covered_by=("tests/test_evaluation_sts.py",)),
    Hook("mteb", "mteb.abstasks.abstask:AbsTask", "data_loaded", "attribute",
         "local tasks and evaluate_model track whether the data is loaded",
         used_in=("st_contrast/evaluation/evaluate.py", "st_contrast/evaluation/sts.py")),
    Hook("mteb", "mteb.abstasks.zeroshot_classification:AbsTaskZeroShotClassification", "load_data", "override",
         "LocalZeroShotTask builds self.dataset = {split: Dataset(image, label)} from memory",
         params=("num_proc", "**"), used_in=("st_contrast/evaluation/zeroshot.py",),
         covered_by=("tests/test_evaluation_images.py",)),
    Hook("mteb", "mteb.abstasks.zeroshot_classification:AbsTaskZeroShotClassification", "get_candidate_labels",
         "override", "LocalZeroShotTask's class prompts (template filled with each class name)",
         used_in=("st_contrast/evaluation/zeroshot.py",), covered_by=("tests/test_evaluation_images.py",)),
    Hook("mteb", "mteb.models:SentenceTransformerEncoderWrapper", "mteb_model_meta", "attribute",
         "evaluate_model declares an image model's modalities (MTEB's metadata of an in-memory model says text)",
         used_in=("st_contrast/evaluation/evaluate.py",), covered_by=("tests/test_evaluation_images.py",)),
    # sentence-transformers / transformers: image-text training
    Hook(_ST, "sentence_transformers.base.trainer:BaseTrainer", "get_data_collator", "override",
         "ContrastiveTrainer builds the collator of a modality Router without router_mapping",
         params=("model", "args", "processing_class"), used_in=("st_contrast/training/trainer.py",),
         covered_by=("tests/test_image_text_models.py",)),
    Hook(_ST, "sentence_transformers.base.trainer:BaseTrainer", "data_collator_class", "attribute",
         "ContrastiveTrainer's collator decodes image references (ImageTextDataCollator)",
         used_in=("st_contrast/training/trainer.py",), covered_by=("tests/test_image_text_models.py",)),
    Hook(_ST, "sentence_transformers.base.losses:CachedLossMixin", "calculate_loss", "override",
         "GradCacheLoss computes the wrapped loss on the cached embeddings", params=("reps", "labels", "with_backward"),
         used_in=("st_contrast/losses/gradcache.py",), covered_by=("tests/test_image_text_losses.py",)),
    Hook(_TF, "transformers.models.auto.image_processing_auto", "IMAGE_PROCESSOR_MAPPING_NAMES", "constant",
         "the image processor class of a random vision tower's model_type",
         used_in=("st_contrast/recipes/image_text.py",), covered_by=("tests/test_image_text_models.py",)),
    Hook(_TF, "transformers.models.auto.image_processing_auto", "get_image_processor_class_from_name", "function",
         "the image processor class by name", params=("class_name",), used_in=("st_contrast/recipes/image_text.py",),
         covered_by=("tests/test_image_text_models.py",)),
    Hook("peft", "peft.tuners.tuners_utils:BaseTunerLayer", "get_base_layer", "method",
         "merge_lora swaps each merged LoRA layer for its base layer", used_in=("st_contrast/adapters/merging.py",),
         covered_by=("tests/test_adapters_lora.py",)),
    Hook("torch", "torch.nn:Module", "_non_persistent_buffers_set", "attribute",
         "the loss state skips non-persistent buffers, as state_dict does",
         used_in=("st_contrast/training/loss_state.py",), covered_by=("tests/test_training_resume.py",)),
)
# fmt: on
"""Every private or undocumented upstream hook st_contrast relies on; :func:`hook_problem` checks one."""


def _resolve_owner(owner: str) -> Any:
    module_name, _, qualname = owner.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in filter(None, qualname.split(".")):
        target = getattr(target, part)
    return target


def _owner_source(owner: Any) -> str:
    """The source of ``owner`` (a module, or a class and its bases from the same library)."""
    import inspect

    library = getattr(owner, "__module__", None) or owner.__name__
    texts = []
    for cls in getattr(owner, "__mro__", (owner,)):
        if (getattr(cls, "__module__", None) or cls.__name__).split(".")[0] != library.split(".")[0]:
            continue
        try:
            texts.append(inspect.getsource(cls))
        except (OSError, TypeError):
            continue
    return "\n".join(texts)


def _signature_problem(hook: Hook, function: Any) -> str | None:
    import inspect

    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return None  # a builtin without a signature: existence is all that can be checked
    parameters = [p for p in signature.parameters.values() if p.name not in ("self", "cls")]
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    named = [p.name for p in parameters if p.kind not in variadic]
    shown = f"its parameters are now ({', '.join(str(p) for p in parameters)})"
    if hook.kind == "override":
        expected = [p for p in hook.params if p != "**"]
        positional = [p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if (positional if "**" in hook.params else named) != expected:
            return shown
        return None
    has_var_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
    passed = [p for p in hook.params if p != "**kwargs"]
    if "**kwargs" in hook.params and not has_var_keyword:
        return shown
    if any(name not in named and not has_var_keyword for name in passed):
        return shown
    required = [p.name for p in parameters if p.kind not in variadic and p.default is inspect.Parameter.empty]
    if any(name not in passed for name in required):
        return shown
    return None


def hook_problem(hook: Hook) -> str | None:
    """Why the installed ``hook.library`` no longer offers ``hook`` as st_contrast uses it, or None.

    Returns:
        A message naming the hook, the releases it was checked on, the installed release and what changed, or
        ``None`` when the hook is there with the expected kind and parameters.
    """
    problem = None
    try:
        owner = _resolve_owner(hook.owner)
    except (ImportError, AttributeError) as error:
        owner, problem = None, f"{hook.owner.replace(':', '.')} is gone ({type(error).__name__}: {error})"
    if problem is None:
        if hook.kind in ("override", "method", "function"):
            target = getattr(owner, hook.attribute, None)
            if not callable(target):
                problem = "it is gone" if target is None else "it is no longer callable"
            else:
                problem = _signature_problem(hook, target)
        elif hook.kind == "constant":
            if not hasattr(owner, hook.attribute):
                problem = "it is gone"
        elif hook.kind == "attribute":
            pattern = rf"(\.|[\"']){re.escape(hook.attribute)}\b"  # self.name, obj.name, getattr(obj, "name")
            if not hasattr(owner, hook.attribute) and not re.search(pattern, _owner_source(owner)):
                problem = "neither it nor its source has it any more"
        else:
            problem = f"unknown hook kind {hook.kind!r}"
    if problem is None:
        return None
    checked = "-".join(dict.fromkeys((CHECKED_ON[hook.library][0], CHECKED_ON[hook.library][-1])))
    covered = f"; behaviour tested in {', '.join(hook.covered_by)}" if hook.covered_by else ""
    return (
        f"st_contrast relies on {hook.describe()} ({hook.kind}: {hook.purpose}; checked on {hook.library} {checked}); "
        f"{hook.library} {_installed(hook.library)} removed or changed it: {problem}. See st_contrast/compat.py "
        f"(used in {', '.join(hook.used_in) or 'st_contrast/compat.py'}{covered})."
    )
