"""The one place st_contrast touches each private or undocumented upstream hook (listed in :data:`HOOKS`).

Each function below names its hook; "Checked on" names the releases whose code was read and whose tests pass;
``tests/test_compat.py`` checks every entry of :data:`~st_contrast.compat.registry.HOOKS` against the installed release.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

from st_contrast.compat.versions import CompatibilityError, installed_version

__all__ = [
    "SAMPLER_WRAPPER_ATTRIBUTES",
    "accelerate_state_exists",
    "accept_indexed_cpu_locations",
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
    "in_encode",
    "is_persistent_buffer",
    "load_checkpoint_weights",
    "load_with_module_classes",
    "model_position_offset",
    "peft_configs",
    "pool_flattened",
    "prompt_length",
    "register_attention_function",
    "restore_padded_inputs",
    "sequences_in",
    "should_flatten_inputs",
    "trainer_output_dir",
    "training_progress_bar",
]


def load_with_module_classes(model_class: type, model_name_or_path: str, module_classes: dict[str, type], **kwargs):
    """Load a saved model, resolving the ``modules.json`` types in ``module_classes`` to those imported classes.

    Hook: ``BaseModel._load_with_module_classes`` (what ST's trainer uses to reload its own checkpoints), so that
    :func:`st_contrast.load_model` loads models naming st_contrast modules without ``trust_remote_code``; every type not
    in ``module_classes`` keeps the normal gate. Checked on sentence-transformers 6.0.1 and 6.2.0.
    """
    loader = getattr(model_class, "_load_with_module_classes", None)
    if loader is None:
        raise CompatibilityError(
            f"sentence-transformers {installed_version('sentence-transformers')} has no "
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


def pool_flattened(pooling: Any, token_embeddings: Any, features: dict[str, Any]) -> list[Any]:
    """ST ``Pooling``'s own pooling of a flattened batch (``features["cu_seq_lens_q"]``) (hook:
    ``Pooling._forward_flattened``; used by :class:`~st_contrast.modules.InstructionPooling`, padded rows too: its
    ``weightedmean`` weights count from each row's first token on every release, the padded path's only from 6.2).
    Checked on sentence-transformers 6.0.0-6.3.0."""
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
    ``PartialState._shared_state``; samplers read the world size from it). Checked on accelerate 1.15 and 1.16."""
    try:
        from accelerate.state import PartialState
    except ImportError:  # pragma: no cover - accelerate is a dependency
        return False
    return bool(PartialState._shared_state)


def _restore_indexed_cpu(storage: Any, location: str) -> Any:
    return storage if location.startswith("cpu:") else None


@functools.cache
def accept_indexed_cpu_locations() -> None:
    """Let ``torch.load(map_location=torch.device("cpu", 0))`` load, as torch's own CPU deserializer loads ``"cpu"``
    only (hook: the public ``torch.serialization.register_package``; idempotent). transformers 5.17 (the GPU
    machine's release) resumes a multi-process CPU run by loading the optimizer state onto ``args.device``, which is
    ``cpu:<rank>`` there, and failed with "don't know how to restore data location"; 5.23 loads it onto ``"cpu"``.
    Checked on torch 2.11 and 2.13 with transformers 5.17 and 5.23."""
    import torch.serialization

    torch.serialization.register_package(100, lambda storage: None, _restore_indexed_cpu)


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
:func:`~st_contrast.data.set_sampler_epoch` follows them. Checked on accelerate 1.15 and 1.16, transformers 5.17 and
5.23."""
