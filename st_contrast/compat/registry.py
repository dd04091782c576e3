"""The registry of every private or undocumented upstream hook st_contrast relies on, and its check."""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Any

from st_contrast.compat.versions import installed_version

__all__ = ["CHECKED_ON", "HOOKS", "Hook", "hook_problem"]


CHECKED_ON: dict[str, tuple[str, ...]] = {
    "sentence-transformers": ("6.0.0", "6.3.0"),
    "transformers": ("5.7.0", "5.23.0"),
    "accelerate": ("1.3.0", "1.16.0"),
    "mteb": ("2.16.0", "2.26.24"),
    "peft": ("0.19.0", "0.21.2"),
    "datasets": ("4.3.0", "5.2.0"),
    "torch": ("2.11.0", "2.15.0"),
}
"""Distribution -> the releases the hooks in :data:`HOOKS` were checked on (the oldest and newest where two)."""


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
_ST_MATRYOSHKA_CACHED = "sentence_transformers.sentence_transformer.losses.matryoshka:CachedLossDecorator"
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
    Hook(_ST, _ST_POOLING, "_forward_flattened", "method", "InstructionPooling pools kept tokens with ST's code",
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
    Hook(_ST, _ST_MATRYOSHKA_CACHED, "matryoshka_dims", "attribute",
         "the dimensions MatryoshkaLoss evaluates a GradCache loss at (its calculate_loss decorator), read to find "
         "the weight of the current one", used_in=("st_contrast/losses/matryoshka.py",),
         covered_by=("tests/test_losses_matryoshka.py",)),
    Hook(_ST, _ST_MATRYOSHKA_CACHED, "matryoshka_weights", "attribute",
         "the weights applied to the embeddings' gradients only; GradCache losses apply them to their own "
         "parameters' gradients", used_in=("st_contrast/losses/matryoshka.py",),
         covered_by=("tests/test_losses_matryoshka.py",)),
    Hook(_ST, "sentence_transformers.sentence_transformer.losses.matryoshka", "ForwardDecorator", "constant",
         "what MatryoshkaLoss puts in place of the model's forward for an uncached loss: per-sample-state losses "
         "refuse to run under it", used_in=("st_contrast/losses/matryoshka.py",),
         covered_by=("tests/test_losses_matryoshka.py",)),
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
    Hook(_TF, _TRAINER, "_run_epoch", "override",
         "ContrastiveTrainer runs the epoch a stream resumes in as the rest of that epoch (its batches and optimizer "
         "steps), so gradient accumulation ends the epoch's last step where an uninterrupted run does; upstream "
         "calls it with keywords only",
         params=("model", "epoch", "train_dataloader", "steps_in_epoch", "num_update_steps_per_epoch", "trial",
                 "ignore_keys_for_eval", "start_time", "resume_from_checkpoint", "epochs_trained",
                 "steps_trained_in_current_epoch"),
         used_in=("st_contrast/training/trainer.py",), covered_by=("tests/test_cli_stream_resume.py",)),
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
         used_in=("st_contrast/compat/versions.py",), covered_by=("tests/test_compat.py",)),
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
        f"{hook.library} {installed_version(hook.library)} removed or changed it: {problem}. See st_contrast/compat/ "
        f"(used in {', '.join(hook.used_in) or 'st_contrast/compat/hooks.py'}{covered})."
    )
