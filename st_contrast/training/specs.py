"""Typed sections of the ``st-contrast train`` configuration, each validated once, when the configuration is read.

Every check that needs no model, no data and no network happens here, before anything expensive starts: unknown
keys, wrong value types (``learning_rate: fast``), out-of-range numbers (``max_seq_length: 0``), unknown losses and
loss arguments, unknown trainer arguments. Errors are :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from st_contrast.data.spec import DatasetSpec
from st_contrast.training.arguments import build_training_arguments
from st_contrast.training.validation import ConfigError, check_type, describe, from_mapping, positive

__all__ = [
    "AdaptersSpec",
    "ConfigError",
    "DataSection",
    "EvaluationSpec",
    "LoraSpec",
    "LossSpec",
    "ModelSpec",
    "MonitoringSpec",
    "RunConfig",
    "resolve_loss_class",
]

logger = logging.getLogger(__name__)

_COMPILE_ARGUMENTS = ("backend", "mode", "fullgraph", "dynamic", "options", "disable", "bucket_shapes")
"""What a ``model.compile`` mapping may set: ``torch.compile``'s arguments, ``compile_backbone``'s ``bucket_shapes``."""
_BATCH_SAMPLERS = ("batch_sampler", "no_duplicates", "no_duplicates_hashed", "group_by_label", "token_budget")


@dataclass
class ModelSpec:
    """The ``model`` section.

    Attributes:
        name_or_path: A saved Sentence Transformers model, a transformers model, a hub id, or ``minilm`` (the
            packaged all-MiniLM-L6-v2).
        packed: Run the backbone packed (padding-free; :func:`~st_contrast.modules.enable_packing`). Default true;
            an architecture that cannot run packed is refused with the alternative (``packed: false``).
        attention_backend: The packed kernel: ``auto``, ``varlen``, ``flash_attn`` or ``sdpa`` (``cpu``: old name).
        compile: ``torch.compile`` the packed backbone with dynamic shapes (one compile for every batch shape;
            :func:`~st_contrast.modules.compile_backbone`), after the adapters are applied. Needs ``packed``. A
            mapping gives its arguments: ``torch.compile``'s (``mode: reduce-overhead`` for CUDA graphs, ``backend``,
            ``fullgraph``, ``dynamic``, ``options``) and ``bucket_shapes``.
        max_seq_length: Truncation length (a positive integer).
        pooling: A ``Pooling`` mode replacing the model's (``mean``, ``cls``, ``lasttoken``, ...).
        normalize: Append a ``Normalize`` module when the model has none.
        bidirectional: Make a decoder bidirectional (LLM2Vec), persisted as ``is_causal: false``.
        model_kwargs / tokenizer_kwargs: Passed to the backbone.
        config_kwargs: Overrides of the transformers config (``{hidden_dropout_prob: 0.0}``).
        device: Where to load the model.
        vision: Makes an image-text two-tower model (:func:`~st_contrast.recipes.two_tower_model`) whose text tower is
            ``name_or_path``: a vision model path / hub id, or a mapping with ``name_or_path`` or ``config`` (a
            transformers config for a tower trained from scratch, e.g. ``{model_type: vit, image_size: 32, ...}``, or a
            timm architecture, ``{model_type: timm_wrapper, architecture: convnext_atto, model_args: {...}}``)
            and ``pooling`` (``auto``, ``pooler``, ``cls``, ``mean``...). ``packed`` then applies to the text tower.
            A single CLIP / SigLIP checkpoint needs no ``vision``: give it as ``name_or_path`` (``packed: false``);
            so does an open_clip checkpoint (a folder with ``open_clip_config.json``, or ``hf-hub:org/name``),
            converted on load (:func:`~st_contrast.recipes.convert_open_clip`, needs ``open_clip_torch``).
        lock: LiT: ``text`` or ``image`` locks that tower (frozen, eval mode, not in the optimizer).
        embedding_dim: The two-tower model's shared embedding size (default: the text tower's).
    """

    name_or_path: str
    packed: bool = True
    attention_backend: str = "auto"
    compile: bool | dict = False
    max_seq_length: int | None = None
    pooling: str | None = None
    normalize: bool = False
    bidirectional: bool | None = None
    model_kwargs: dict | None = None
    tokenizer_kwargs: dict | None = None
    config_kwargs: dict | None = None
    device: str | None = None
    vision: str | dict | None = None
    lock: str | None = None
    embedding_dim: int | None = None

    @classmethod
    def from_dict(cls, values: Any) -> ModelSpec:
        if isinstance(values, Mapping) and "backbone" in values:
            values = dict(values)
            backbone = values.pop("backbone")
            if backbone not in ("flash", "stock"):
                raise ConfigError(
                    f"model.backbone (old name of model.packed) must be 'flash' or 'stock', not {backbone!r}."
                )
            logger.warning("model.backbone: %s is the old spelling of model.packed: %s.", backbone, backbone == "flash")
            values.setdefault("packed", backbone == "flash")
        if isinstance(values, Mapping) and "name_or_path" not in values:
            raise ConfigError(
                "model.name_or_path is required (a local path, a hub id, or 'minilm' for the packaged model)."
            )
        spec = from_mapping(cls, "model", values)
        spec.name_or_path = str(spec.name_or_path)
        positive("model.max_seq_length", spec.max_seq_length)
        if spec.compile and not spec.packed:
            raise ConfigError("model.compile compiles the packed backbone: set model.packed: true, or drop compile.")
        if isinstance(spec.compile, dict) and (unknown := sorted(set(spec.compile) - set(_COMPILE_ARGUMENTS))):
            raise ConfigError(f"model.compile: unknown argument(s) {unknown}; choose from {list(_COMPILE_ARGUMENTS)}.")
        from st_contrast.attention.backends import canonical_backend_name

        try:
            spec.attention_backend = canonical_backend_name(spec.attention_backend)
        except ValueError as error:
            raise ConfigError(f"model.attention_backend: {error}") from None
        if spec.pooling is not None:
            from sentence_transformers.sentence_transformer.modules import Pooling

            if spec.pooling not in Pooling.POOLING_MODES:
                raise ConfigError(f"model.pooling must be one of {list(Pooling.POOLING_MODES)}, got {spec.pooling!r}.")
        positive("model.embedding_dim", spec.embedding_dim)
        if isinstance(spec.vision, str):
            spec.vision = {"name_or_path": spec.vision}
        if spec.vision is not None:
            known = {"name_or_path", "config", "pooling"}
            if unknown := sorted(set(spec.vision) - known):
                raise ConfigError(f"Unknown key(s) {unknown} in model.vision; known: {sorted(known)}.")
            if ("name_or_path" in spec.vision) == ("config" in spec.vision):
                raise ConfigError("model.vision needs exactly one of name_or_path (a vision model) or config.")
            if "config" in spec.vision and not isinstance(spec.vision["config"], Mapping):
                raise ConfigError(f"model.vision.config must be a mapping, got {describe(spec.vision['config'])}.")
        if spec.lock is not None and spec.lock not in ("text", "image"):
            raise ConfigError(f"model.lock must be 'text' or 'image', got {spec.lock!r}.")
        if spec.vision is None and (spec.lock or spec.embedding_dim):
            raise ConfigError("model.lock and model.embedding_dim need a two-tower model: set model.vision.")
        return spec


@dataclass
class LoraSpec:
    """``adapters.lora``: a preset (``auto``, ``encoder``, ``decoder``, ``modernbert``) and its size."""

    preset: str = "auto"
    r: int = 8
    alpha: int | float = 16
    dropout: float = 0.05

    def __post_init__(self) -> None:
        from st_contrast.adapters.lora import LORA_PRESETS

        if self.preset != "auto" and self.preset not in LORA_PRESETS:
            raise ConfigError(
                f"adapters.lora.preset must be 'auto' or one of {sorted(LORA_PRESETS)}, not {self.preset!r}."
            )
        positive("adapters.lora.r", self.r)
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"adapters.lora.dropout must be in [0, 1), got {self.dropout!r}.")


@dataclass
class FreezeSpec:
    """``adapters.freeze``: the embeddings and/or the first ``layers`` blocks."""

    embeddings: bool = False
    layers: int = 0


@dataclass
class BitFitSpec:
    """``adapters.bitfit``: bias-only training, optionally with embeddings and heads."""

    train_embeddings: bool = False
    train_heads: bool = False


@dataclass
class AdaptersSpec:
    """The ``adapters`` section: ``bitfit``, ``lora`` (not both) and ``freeze``."""

    bitfit: BitFitSpec | None = None
    lora: LoraSpec | None = None
    freeze: FreezeSpec | None = None

    @classmethod
    def from_dict(cls, values: Any) -> AdaptersSpec:
        if values is None:
            return cls()
        if not isinstance(values, Mapping):
            raise ConfigError(f"Section 'adapters' must be a mapping, got {describe(values)}.")
        parts = {"bitfit": BitFitSpec, "lora": LoraSpec, "freeze": FreezeSpec}
        if unknown := sorted(set(values) - set(parts)):
            raise ConfigError(f"Unknown key(s) {unknown} in section 'adapters'; known: {sorted(parts)}.")
        spec = cls(**{name: from_mapping(parts[name], f"adapters.{name}", v) for name, v in values.items()})
        if spec.bitfit is not None and spec.lora is not None:
            raise ConfigError("adapters: choose bitfit or lora, not both.")
        return spec


def resolve_loss_class(name: str) -> type:
    """A loss class from ``st_contrast.losses``, Sentence Transformers' losses, or a ``module:Class`` path."""
    from sentence_transformers.sentence_transformer import losses as st_losses

    from st_contrast import losses as our_losses

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


@dataclass
class MatryoshkaSpec:
    """``loss.matryoshka``: the dimensions (and optional weights) of ST's ``MatryoshkaLoss``."""

    dims: list
    weights: list | None = None
    n_dims_per_step: int = -1

    def __post_init__(self) -> None:
        if not self.dims or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in self.dims):
            raise ConfigError(f"loss.matryoshka.dims must be a list of positive integers, got {self.dims!r}.")
        if self.weights is not None and len(self.weights) != len(self.dims):
            raise ConfigError(f"loss.matryoshka.weights needs one weight per dimension ({len(self.dims)}).")


@dataclass
class LossSpec:
    """The ``loss`` section: a loss class by name, its keyword arguments, GloFND, GradCache and Matryoshka wrappers.

    ``gradcache: {mini_batch_size: 32}`` wraps a loss that computes from embeddings (SigLIP, GlobalContrastiveLoss,
    CLIP) in :class:`~st_contrast.losses.GradCacheLoss`. ``kwargs: {temperature: checkpoint}`` (and SigLIP's
    ``bias: checkpoint``) continues from the model's own learned logit scale (and bias): a CLIP / SigLIP checkpoint
    or a converted open_clip one.
    """

    name: str
    kwargs: dict = field(default_factory=dict)
    glofnd: dict | None = None
    gradcache: dict | None = None
    matryoshka: MatryoshkaSpec | None = None
    loss_class: type = field(init=False, repr=False)

    @classmethod
    def from_dict(cls, values: Any) -> LossSpec:
        if not isinstance(values, Mapping):
            raise ConfigError(f"Section 'loss' must be a mapping, got {describe(values)}.")
        if "name" not in values:
            raise ConfigError(
                "loss.name is required (a class of st_contrast.losses or ST's losses, or 'module:Class')."
            )
        values = dict(values)
        matryoshka = values.pop("matryoshka", None)
        if matryoshka is not None:
            if isinstance(matryoshka, Mapping) and "dims" not in matryoshka:
                raise ConfigError("loss.matryoshka needs 'dims', e.g. [384, 256, 128, 64].")
            matryoshka = from_mapping(MatryoshkaSpec, "loss.matryoshka", matryoshka)
        spec = from_mapping(cls, "loss", values)
        spec.kwargs = dict(spec.kwargs or {})
        spec.matryoshka = matryoshka
        spec.loss_class = resolve_loss_class(spec.name)
        spec._check_arguments()
        if matryoshka is not None and spec.needs_sample_index:
            raise ConfigError(
                f"loss.matryoshka cannot wrap {spec.name}{' with glofnd' if spec.glofnd is not None else ''}: its "
                "per-sample state (GloFND thresholds, SogCLR / FastCLIP moving averages) belongs to one embedding, and "
                "Matryoshka "
                "would update it once per dimension. Drop loss.matryoshka, or use a stateless loss with it."
            )
        if spec.gradcache is not None:
            if unknown := sorted(set(spec.gradcache) - {"mini_batch_size", "mini_batch_num_tokens"}):
                raise ConfigError(
                    f"Unknown key(s) {unknown} in loss.gradcache; known: mini_batch_size, mini_batch_num_tokens."
                )
            positive("loss.gradcache.mini_batch_size", spec.gradcache.get("mini_batch_size"))
            if not callable(getattr(spec.loss_class, "compute_loss_from_embeddings", None)):
                raise ConfigError(f"loss.gradcache: {spec.name} does not compute from embeddings; it cannot be cached.")
        return spec

    @property
    def needs_sample_index(self) -> bool:
        """Whether the loss keeps per-sample state (declared by the loss class, or GloFND), so rows need indices."""
        return self.glofnd is not None or bool(getattr(self.loss_class, "needs_sample_index", False))

    def _check_arguments(self) -> None:
        try:
            parameters = inspect.signature(self.loss_class).parameters
        except (TypeError, ValueError):
            return
        if self.glofnd is not None and "false_negative_detector" not in parameters:
            raise ConfigError(f"loss.glofnd needs an InfoNCE loss of st_contrast.losses, not {self.name}.")
        if self.glofnd is not None:
            from st_contrast.losses import GloFND

            detector_parameters = inspect.signature(GloFND).parameters
            if unknown := sorted(set(self.glofnd) - set(detector_parameters) - {"num_samples"}):
                raise ConfigError(f"Unknown key(s) {unknown} in loss.glofnd; known: {sorted(detector_parameters)}.")
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            return
        if unknown := sorted(set(self.kwargs) - set(parameters)):
            raise ConfigError(
                f"loss.kwargs {unknown} are not arguments of {self.loss_class.__name__}; it takes "
                f"{sorted(name for name in parameters if name != 'model')}."
            )


@dataclass
class DataSection:
    """The ``data`` section: the dataset entries and how they are batched."""

    datasets: list
    batch_sampler: str = "no_duplicates"
    max_tokens: int | None = None
    single_dataset_batches: bool = True
    sample_index: bool | str = "auto"
    no_duplicates: bool = True
    prepare: dict | None = None
    streams: bool = field(default=False, init=False)

    @classmethod
    def from_dict(cls, values: Any) -> DataSection:
        spec = from_mapping(cls, "data", values)
        if not spec.datasets:
            raise ConfigError("data.datasets must list at least one dataset.")
        parsed = []
        for index, entry in enumerate(spec.datasets):
            if not isinstance(entry, Mapping):
                raise ConfigError(f"data.datasets.{index} must be a mapping, got {describe(entry)}.")
            try:
                parsed.append(DatasetSpec.from_dict({key: value for key, value in entry.items() if key != "fallback"}))
            except (TypeError, ValueError) as error:
                raise ConfigError(f"data.datasets.{index}: {error}") from None
        spec.streams = any(dataset.streams for dataset in parsed)
        if spec.streams and spec.batch_sampler not in ("no_duplicates", "batch_sampler"):
            raise ConfigError(
                f"data.batch_sampler: {spec.batch_sampler!r} needs the whole dataset, but data.datasets stream (URLs "
                "or stream: true). Use no_duplicates or batch_sampler, or stream: false to load them into the cache."
            )
        if spec.streams and not spec.single_dataset_batches:
            raise ConfigError("data.single_dataset_batches: false is not available for streamed datasets.")
        if spec.batch_sampler not in _BATCH_SAMPLERS:
            raise ConfigError(f"data.batch_sampler must be one of {list(_BATCH_SAMPLERS)}, not {spec.batch_sampler!r}.")
        if spec.batch_sampler == "token_budget" and not spec.max_tokens:
            raise ConfigError("data.batch_sampler: token_budget needs data.max_tokens (padded tokens per batch).")
        positive("data.max_tokens", spec.max_tokens)
        if spec.sample_index not in ("auto", True, False):
            raise ConfigError(f"data.sample_index must be auto, true or false, not {spec.sample_index!r}.")
        if spec.prepare is not None:
            _check_prepare(spec.prepare)
        spec._check_combinations(parsed, set(values))
        return spec

    def _check_combinations(self, datasets: list[DatasetSpec], given: set[str]) -> None:
        """Refuse settings that the chosen batching would ignore or cannot run.

        Args:
            datasets: The parsed dataset entries.
            given: The keys the ``data`` section sets (defaults are never refused).
        """
        if not self.single_dataset_batches:
            weighted = [dataset.name for dataset in datasets if dataset.weight is not None]
            if weighted:
                raise ConfigError(
                    f"data.datasets {weighted} set a weight, which only data.single_dataset_batches: true (the "
                    "default) uses: set it, or drop the weights (ST then draws the datasets by its own sampler)."
                )
            if self.batch_sampler == "token_budget" and len(datasets) > 1:
                raise ConfigError(
                    "data.batch_sampler: token_budget batches one dataset at a time: with several datasets set "
                    "data.single_dataset_batches: true (the default)."
                )
        if self.batch_sampler != "token_budget":
            ignored = sorted(given & {"max_tokens", "no_duplicates"})
            if ignored:
                raise ConfigError(
                    f"Only data.batch_sampler: token_budget uses data.{' and data.'.join(ignored)}; with "
                    f"{self.batch_sampler!r} {'they are' if len(ignored) > 1 else 'it is'} ignored: drop "
                    f"{'them' if len(ignored) > 1 else 'it'}, or set batch_sampler: token_budget."
                )


def _check_prepare(prepare: Mapping[str, Any]) -> None:
    """``data.prepare``: ``{function: "module:function", kwargs: {...}}``, a function that writes the data."""
    if unknown := sorted(set(prepare) - {"function", "kwargs"}):
        raise ConfigError(f"Unknown key(s) {unknown} in data.prepare; known: ['function', 'kwargs'].")
    name = prepare.get("function")
    if not isinstance(name, str) or ":" not in name:
        raise ConfigError(f"data.prepare.function must be 'package.module:function', got {describe(name)}.")
    module_name, _, function = name.partition(":")
    try:
        target = getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"data.prepare.function {name!r} cannot be imported: {error}") from None
    if not callable(target):
        raise ConfigError(f"data.prepare.function {name!r} is not callable.")
    check_type("data.prepare.kwargs", prepare.get("kwargs") or {}, dict)


@dataclass
class EvaluationSpec:
    """The ``evaluation`` section: MTEB task specs scored before and after training."""

    tasks: list = field(default_factory=list)
    before: bool = True
    after: bool = True
    batch_size: int = 64

    @classmethod
    def from_dict(cls, values: Any) -> EvaluationSpec:
        spec = from_mapping(cls, "evaluation", values)
        positive("evaluation.batch_size", spec.batch_size)
        return spec


@dataclass
class MonitoringSpec:
    """The ``monitoring`` section (on unless ``enabled: false``)."""

    enabled: bool = True
    probe: dict | None = None
    spectrum_every: int = 0
    spectrum_patterns: list | None = None
    peak_flops: float | None = None

    @classmethod
    def from_dict(cls, values: Any) -> MonitoringSpec:
        spec = from_mapping(cls, "monitoring", values)
        if spec.spectrum_every < 0:
            raise ConfigError(f"monitoring.spectrum_every must be 0 (off) or positive, got {spec.spectrum_every}.")
        if spec.probe is not None:  # a dataset entry (name optional), checked now rather than after the model loads
            try:
                DatasetSpec.from_dict({"name": "probe", **spec.probe})
            except (TypeError, ValueError) as error:
                raise ConfigError(f"monitoring.probe: {error}") from None
        return spec


_SECTIONS = (
    "output_dir",
    "seed",
    "resume",
    "model",
    "adapters",
    "loss",
    "data",
    "training",
    "evaluation",
    "monitoring",
)
_REQUIRED = ("output_dir", "model", "loss", "data")


@dataclass
class RunConfig:
    """A validated run configuration (see :func:`~st_contrast.training.config.load_config`).

    ``raw`` keeps the configuration as written (after ``--set`` overrides), which is what ``config.yaml`` records.
    """

    output_dir: str
    model: ModelSpec
    loss: LossSpec
    data: DataSection
    seed: int = 12
    resume: bool | str = "auto"
    adapters: AdaptersSpec = field(default_factory=AdaptersSpec)
    training: dict = field(default_factory=dict)
    evaluation: EvaluationSpec = field(default_factory=EvaluationSpec)
    monitoring: MonitoringSpec = field(default_factory=MonitoringSpec)
    raw: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> RunConfig:
        if not isinstance(config, Mapping):
            raise ConfigError(
                f"A configuration is a mapping of sections ({', '.join(_SECTIONS)}), not {describe(config)}."
            )
        if unknown := sorted(set(config) - set(_SECTIONS)):
            raise ConfigError(f"Unknown configuration section(s) {unknown}; known: {sorted(_SECTIONS)}.")
        if missing := [name for name in _REQUIRED if not config.get(name)]:
            raise ConfigError(f"The configuration needs the section(s) {missing}.")
        output_dir = check_type("output_dir", config["output_dir"], str)
        seed = check_type("seed", config.get("seed", 12), int)
        resume = config.get("resume", "auto")
        if resume not in ("auto", True, False):
            raise ConfigError(f"resume must be 'auto', true or false, not {resume!r}.")
        training = config.get("training") or {}
        if not isinstance(training, Mapping):
            raise ConfigError(f"Section 'training' must be a mapping, got {describe(training)}.")
        if "output_dir" in training:
            raise ConfigError("Set output_dir at the top level of the configuration, not in 'training'.")
        build_training_arguments(output_dir, dict(training), seed)  # every check TrainingArguments makes, up front
        data = DataSection.from_dict(config["data"])
        if data.streams and training.get("dataloader_num_workers"):
            raise ConfigError(
                "training.dataloader_num_workers must be 0 when data.datasets stream: a stream reads in a background "
                "thread and keeps its position (for checkpoints) in the training process."
            )
        monitoring = MonitoringSpec.from_dict(config.get("monitoring"))
        if training.get("eval_strategy", "no") != "no" and not (monitoring.enabled and monitoring.probe):
            raise ConfigError(
                f"training.eval_strategy is {training['eval_strategy']!r}, but there is nothing to evaluate during "
                "training: the monitoring probe is off (monitoring.probe unset or monitoring.enabled: false). Set "
                "training.eval_strategy: 'no' (the evaluation section runs before and after training), or a probe."
            )
        return cls(
            output_dir=output_dir,
            model=ModelSpec.from_dict(config["model"]),
            loss=LossSpec.from_dict(config["loss"]),
            data=data,
            seed=seed,
            resume=resume,
            adapters=AdaptersSpec.from_dict(config.get("adapters")),
            training=dict(training),
            evaluation=EvaluationSpec.from_dict(config.get("evaluation")),
            monitoring=monitoring,
            raw=dict(config),
        )
