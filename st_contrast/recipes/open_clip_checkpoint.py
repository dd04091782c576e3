"""open_clip checkpoints as plain Sentence Transformers models: an open_clip ``CLIP`` with ViT image and text towers
(OpenAI CLIP, LAION, DataComp, MetaCLIP, DFN... or a checkpoint of your own open_clip training run) becomes a
transformers ``CLIPModel`` folder with its tokenizer and image processor, saved as a Sentence Transformers model
(``Transformer`` + ``Normalize``), so it loads with plain ``SentenceTransformer(dir)`` and trains with st_contrast.

Only the conversion needs open_clip (``pip install open_clip_torch``); the converted model does not."""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "OPEN_CLIP_CONFIG",
    "OpenClipConversion",
    "convert_open_clip",
    "is_open_clip_checkpoint",
    "load_converted_open_clip",
    "load_open_clip",
    "open_clip_refusal",
]

logger = logging.getLogger(__name__)

OPEN_CLIP_CONFIG = "open_clip_config.json"
"""The file that marks a folder in open_clip's format (``save_for_hf`` / hub repos of open_clip models)."""

VERIFY_TOLERANCE = 1e-4
"""Largest difference allowed between open_clip's and the converted model's normalised embeddings of the probe
texts and images (float32 on CPU: about 1e-7 at the model's image size, a few 1e-6 where resampling differs)."""

_SCHEMA_PREFIXES = ("hf-hub:", "local-dir:")
"""open_clip's own spellings of a hub repo and of a folder."""
_PROBE_TEXTS = (
    "a photo of a cat",
    "A man is playing a guitar on stage, 1984.",
    "Café déjà-vu: naïve façades & CAPITALS!",
    "long " * 100,
)
_SPECIAL_TOKENS = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
_RESIZE_MODES = ("shortest", "squash")
_INTERPOLATIONS = {"bicubic": 3, "bilinear": 2}  # PIL resampling filters


@dataclass
class OpenClipConversion:
    """What :func:`convert_open_clip` wrote and measured.

    Attributes:
        output_dir: The converted Sentence Transformers model.
        logit_scale: open_clip's learned ``logit_scale.exp()`` (a temperature of ``1 / logit_scale``), for a loss
            that continues from it.
        text_difference: Largest absolute difference between open_clip's and the converted model's normalised
            embeddings of probe texts (``None`` when not verified).
        image_difference: The same for probe images at the model's image size and at other sizes (resized and
            cropped by both preprocessors).
    """

    output_dir: str
    logit_scale: float
    text_difference: float | None = None
    image_difference: float | None = None


def is_open_clip_checkpoint(name_or_path: str) -> bool:
    """Whether ``name_or_path`` is an open_clip checkpoint: a folder with ``open_clip_config.json`` (and no
    transformers ``config.json``), or an ``hf-hub:org/name`` / ``local-dir:FOLDER`` name."""
    if name_or_path.startswith(_SCHEMA_PREFIXES):
        return True
    folder = Path(name_or_path)
    return (folder / OPEN_CLIP_CONFIG).is_file() and not (folder / "config.json").is_file()


def _require_open_clip() -> Any:
    try:
        import open_clip
    except (ImportError, RuntimeError) as error:  # a torchvision built for another torch fails with a RuntimeError
        raise ImportError(
            f"Converting an open_clip checkpoint needs open_clip: pip install open_clip_torch (the converted model "
            f"does not); importing it failed: {error}"
        ) from error
    return open_clip


def load_open_clip(name: str, pretrained: str | None = None) -> tuple[Any, Any]:
    """An open_clip model (eval mode, on CPU) and its tokenizer, as open_clip itself loads them.

    Args:
        name: A folder in open_clip's format (or ``local-dir:FOLDER``), ``hf-hub:org/name``, or a built-in
            architecture (``"ViT-B-32"``).
        pretrained: With a built-in architecture: a pretrained tag (``"laion2b_s34b_b79k"``) or a checkpoint file,
            such as the ``epoch_N.pt`` of an open_clip training run.
    """
    open_clip = _require_open_clip()
    if Path(name).is_dir():
        name = f"local-dir:{name}"
    schema, _ = open_clip.factory.parse_model_name(name)  # 'hf-hub', 'local-dir' or None (an architecture name)
    if schema is None and name.replace("/", "-") not in open_clip.list_models():
        raise ValueError(
            f"{name!r} is neither a folder in open_clip's format, an hf-hub:org/name id, nor a built-in open_clip "
            "architecture (open_clip.list_models())."
        )
    try:
        model = open_clip.create_model(name, pretrained=pretrained, device="cpu").eval()
    except (RuntimeError, OSError) as error:  # open_clip's errors for a missing config, weights or hub repo
        raise ValueError(f"open_clip cannot load {name!r}: {error}") from error
    return model, open_clip.get_tokenizer(name)


def _blocks(transformer: Any) -> Iterator[Any]:
    yield from transformer.resblocks


def _activation(blocks: list[Any], tower: str) -> str:
    from open_clip.transformer import QuickGELU
    from torch import nn

    names = set()
    for block in blocks:
        act = block.mlp.gelu
        if isinstance(act, QuickGELU):
            names.add("quick_gelu")
        elif isinstance(act, nn.GELU):
            names.add("gelu" if act.approximate == "none" else "gelu_pytorch_tanh")
        else:
            names.add(type(act).__name__)
    if len(names) != 1 or not names <= {"quick_gelu", "gelu", "gelu_pytorch_tanh"}:
        raise ValueError(f"the {tower} tower's MLP activation {sorted(names)} has no transformers CLIP equivalent")
    return names.pop()


def _layer_norm_eps(modules: list[Any], tower: str) -> float:
    values = {module.eps for module in modules}
    if len(values) != 1:
        raise ValueError(f"the {tower} tower mixes LayerNorm eps {sorted(values)}")
    return values.pop()


def open_clip_refusal(model: Any, tokenizer: Any = None) -> str | None:
    """Why an open_clip model cannot become a transformers ``CLIPModel`` exactly, or ``None`` when it can.

    Convertible: ``open_clip.CLIP`` with a ViT image tower (class-token pooling, pre-norm, learnable positions) and
    its own causal text transformer (end-of-text pooling), QuickGELU or GELU, no LayerScale or custom attention
    blocks, and open_clip's default BPE tokenizer (lower-casing). Refused, with the setting named: timm or ResNet
    image towers, Hugging Face text towers (``CustomTextCLIP``), CoCa, attentional or average pooling, LayerScale.
    """
    from open_clip.model import CLIP
    from open_clip.tokenizer import SimpleTokenizer, _clean_lower
    from open_clip.transformer import ResidualAttentionBlock, VisionTransformer
    from torch import nn

    if type(model) is not CLIP:
        return (
            f"{type(model).__name__} is not open_clip's CLIP with its own text transformer (a Hugging Face text "
            "tower, CoCa...); build a two-tower model from its towers instead"
        )
    visual = model.visual
    if not isinstance(visual, VisionTransformer):
        return (
            f"its image tower is {type(visual).__name__}, not a ViT; a timm image tower is a 'timm_wrapper' "
            "vision tower (st_contrast.recipes.vision_tower)"
        )
    checks = {
        "attentional pooling (vision_cfg.attentional_pool)": visual.attn_pool is not None,
        f"image pooling {visual.pool_type!r} (vision_cfg.pool_type; only 'tok')": visual.pool_type != "tok",
        "LayerNorm after pooling (final_ln_after_pool)": visual.final_ln_after_pool,
        "no LayerNorm before the image transformer (vision_cfg.no_ln_pre)": isinstance(visual.ln_pre, nn.Identity),
        "fixed image position embeddings (vision_cfg.pos_embed_type)": not isinstance(
            visual.positional_embedding, nn.Parameter
        ),
        "a non-square image or patch size": len(set(_pair(visual.image_size))) != 1
        or len(set(_pair(visual.patch_size))) != 1,
        "a biased or missing image projection": not isinstance(visual.proj, nn.Parameter),
        "no causal mask in the text tower (text_cfg.no_causal_mask)": model.attn_mask is None,
        f"text pooling {model.text_pool_type!r} (text_cfg.pool_type; only 'argmax')": model.text_pool_type != "argmax",
        "a biased or missing text projection (text_cfg.proj_bias / proj_type)": not isinstance(
            model.text_projection, nn.Parameter
        ),
    }
    blocks = [*_blocks(visual.transformer), *_blocks(model.transformer)]
    checks["custom attention blocks (block_type, qk_norm, scale_*)"] = not all(
        isinstance(block, ResidualAttentionBlock) for block in blocks
    )
    checks["LayerScale (ls_init_value)"] = not all(
        isinstance(getattr(block, "ls_1", nn.Identity()), nn.Identity) for block in blocks
    )
    if refused := [setting for setting, present in checks.items() if present]:
        return f"transformers' CLIPModel has no {', '.join(refused)}"
    if tokenizer is not None:
        if not isinstance(tokenizer, SimpleTokenizer):
            return f"its tokenizer is {type(tokenizer).__name__}, not open_clip's CLIP BPE tokenizer (SimpleTokenizer)"
        if tokenizer.clean_fn is not _clean_lower or tokenizer.reduction_fn is not None:
            return "its tokenizer cleans text other than by lower-casing (clean / reduction_mask settings)"
        if len(tokenizer.all_special_ids) != 2:
            return "its tokenizer has additional special tokens"
    return None


def _pair(value: Any) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _attention_weights(prefix: str, block: Any) -> dict[str, Any]:
    query, key, value = block.attn.in_proj_weight.chunk(3)
    query_bias, key_bias, value_bias = block.attn.in_proj_bias.chunk(3)
    return {
        f"{prefix}.self_attn.q_proj.weight": query,
        f"{prefix}.self_attn.k_proj.weight": key,
        f"{prefix}.self_attn.v_proj.weight": value,
        f"{prefix}.self_attn.q_proj.bias": query_bias,
        f"{prefix}.self_attn.k_proj.bias": key_bias,
        f"{prefix}.self_attn.v_proj.bias": value_bias,
        f"{prefix}.self_attn.out_proj.weight": block.attn.out_proj.weight,
        f"{prefix}.self_attn.out_proj.bias": block.attn.out_proj.bias,
        f"{prefix}.layer_norm1.weight": block.ln_1.weight,
        f"{prefix}.layer_norm1.bias": block.ln_1.bias,
        f"{prefix}.layer_norm2.weight": block.ln_2.weight,
        f"{prefix}.layer_norm2.bias": block.ln_2.bias,
        f"{prefix}.mlp.fc1.weight": block.mlp.c_fc.weight,
        f"{prefix}.mlp.fc1.bias": block.mlp.c_fc.bias,
        f"{prefix}.mlp.fc2.weight": block.mlp.c_proj.weight,
        f"{prefix}.mlp.fc2.bias": block.mlp.c_proj.bias,
    }


def _transformers_state_dict(model: Any) -> dict[str, Any]:
    """open_clip's CLIP weights under transformers ``CLIPModel``'s names (fused q/k/v split, projections
    transposed)."""
    visual = model.visual
    weights = {
        "text_model.embeddings.token_embedding.weight": model.token_embedding.weight,
        "text_model.embeddings.position_embedding.weight": model.positional_embedding,
        "text_model.final_layer_norm.weight": model.ln_final.weight,
        "text_model.final_layer_norm.bias": model.ln_final.bias,
        "text_projection.weight": model.text_projection.T,
        "vision_model.embeddings.class_embedding": visual.class_embedding,
        "vision_model.embeddings.patch_embedding.weight": visual.conv1.weight,
        "vision_model.embeddings.position_embedding.weight": visual.positional_embedding,
        "vision_model.pre_layrnorm.weight": visual.ln_pre.weight,
        "vision_model.pre_layrnorm.bias": visual.ln_pre.bias,
        "vision_model.post_layernorm.weight": visual.ln_post.weight,
        "vision_model.post_layernorm.bias": visual.ln_post.bias,
        "visual_projection.weight": visual.proj.T,
        "logit_scale": model.logit_scale.reshape(()),
    }
    for index, block in enumerate(_blocks(model.transformer)):
        weights.update(_attention_weights(f"text_model.encoder.layers.{index}", block))
    for index, block in enumerate(_blocks(visual.transformer)):
        weights.update(_attention_weights(f"vision_model.encoder.layers.{index}", block))
    return {name: tensor.detach().float().contiguous().clone() for name, tensor in weights.items()}


def _clip_config(model: Any, tokenizer: Any) -> Any:
    from transformers import CLIPConfig

    visual = model.visual
    text_blocks, vision_blocks = list(_blocks(model.transformer)), list(_blocks(visual.transformer))
    text_width, vision_width = model.token_embedding.embedding_dim, visual.conv1.out_channels
    text = {
        "vocab_size": model.vocab_size,
        "hidden_size": text_width,
        "intermediate_size": text_blocks[0].mlp.c_fc.out_features,
        "num_hidden_layers": len(text_blocks),
        "num_attention_heads": text_blocks[0].attn.num_heads,
        "max_position_embeddings": model.context_length,
        "hidden_act": _activation(text_blocks, "text"),
        "layer_norm_eps": _layer_norm_eps(
            [model.ln_final, *(ln for block in text_blocks for ln in (block.ln_1, block.ln_2))], "text"
        ),
        "projection_dim": model.text_projection.shape[1],
        # the end-of-text token closes every sequence: pooling at its first position is open_clip's argmax pooling
        "bos_token_id": tokenizer.sot_token_id,
        "eos_token_id": tokenizer.eot_token_id,
        "pad_token_id": tokenizer.eot_token_id,
    }
    vision = {
        "hidden_size": vision_width,
        "intermediate_size": vision_blocks[0].mlp.c_fc.out_features,
        "num_hidden_layers": len(vision_blocks),
        "num_attention_heads": vision_blocks[0].attn.num_heads,
        "image_size": _pair(visual.image_size)[0],
        "patch_size": _pair(visual.patch_size)[0],
        "hidden_act": _activation(vision_blocks, "image"),
        "layer_norm_eps": _layer_norm_eps(
            [visual.ln_pre, visual.ln_post, *(ln for block in vision_blocks for ln in (block.ln_1, block.ln_2))],
            "image",
        ),
        "projection_dim": visual.proj.shape[1],
    }
    return CLIPConfig(
        text_config=text,
        vision_config=vision,
        projection_dim=visual.proj.shape[1],
        logit_scale_init_value=float(model.logit_scale.detach().reshape(())),
    )


_AMPERSANDS = ("&amp;", "&AMP;", "&#38;", "&#x26;")
"""The entities of ``&`` itself: the only ones whose text can form another entity (open_clip unescapes twice)."""

_ENTITY_CODE_POINTS = (34, 39, 60, 62, *range(160, 256), *range(0x2010, 0x2028), *range(0x2030, 0x203B), 0x20AC, 0x2122)
"""Code points whose numeric entities (``&#233;``, ``&#xe9;``) the normalizer decodes: quotes and brackets, Latin-1's
letters and signs, and punctuation (dashes, curly quotes, bullets, ellipsis, the euro and trade marks), what web
captions escape."""


def _html_entities() -> list[tuple[str, str]]:
    """``(entity, text)`` of every HTML 4 named entity and the numeric entities of :data:`_ENTITY_CODE_POINTS`, the
    ampersand's own entities excluded (see :func:`_open_clip_normalizer`)."""
    from html.entities import name2codepoint

    named = [(f"&{name};", chr(code)) for name, code in name2codepoint.items()]
    numeric = [(f"&#{code};", chr(code)) for code in _ENTITY_CODE_POINTS]
    numeric += [(f"&#x{code:x};", chr(code)) for code in _ENTITY_CODE_POINTS]
    return [(entity, text) for entity, text in named + numeric if entity not in _AMPERSANDS]


def _open_clip_normalizer() -> Any:
    """open_clip's text cleaning (``ftfy.fix_text``, ``html.unescape`` twice, whitespace collapsed, lower case) as
    a tokenizers normalizer, so it travels in ``tokenizer.json``: HTML entities, ftfy's ligatures, character widths,
    curly quotes and control characters from ftfy's own tables.

    ``html.unescape`` twice is ``&`` decoded, then every other entity, then ``&`` again (only the ampersand's decoded
    text can form a new entity: ``&amp;eacute;`` is ``é``, ``&amp;amp;lt;`` is ``&lt;``). The entities are HTML 4's
    named ones and the numeric ones of Latin-1 and general punctuation (:func:`_html_entities`); HTML5-only names,
    other numeric entities, legacy names without their ``;`` and text escaped three times (ftfy unescapes once more
    when the text has no ``<``) stay as written, as does mis-decoded text (mojibake such as ``donâ€™t``, which ftfy
    repairs): not expressible as a normalizer's table."""
    import re

    from ftfy import chardata
    from tokenizers import Regex, normalizers

    def replace(table: dict[int, Any]) -> list[Any]:
        pairs = ((chr(code), value if isinstance(value, str) else chr(value)) for code, value in table.items())
        return [normalizers.Replace(source, target) for source, target in pairs if source != target]

    ampersands = [normalizers.Replace(entity, "&") for entity in _AMPERSANDS]
    entities = [normalizers.Replace(entity, text) for entity, text in _html_entities()]
    controls = "".join(re.escape(chr(code)) for code in chardata.CONTROL_CHARS)
    return normalizers.Sequence(
        [
            *ampersands,
            *entities,
            *ampersands,
            *replace(chardata.LIGATURES),
            *replace(chardata.WIDTH_MAP),
            normalizers.Replace(Regex(chardata.SINGLE_QUOTE_RE.pattern), "'"),
            normalizers.Replace(Regex(chardata.DOUBLE_QUOTE_RE.pattern), '"'),
            normalizers.Replace(Regex(f"[{controls}]"), ""),
            normalizers.NFC(),
            normalizers.Replace(Regex(r"\s+"), " "),
            normalizers.Lowercase(),
        ]
    )


def _clip_tokenizer(tokenizer: Any, context_length: int) -> Any:
    """open_clip's BPE vocabulary and merges as transformers' CLIP tokenizer (same ids), with open_clip's text
    cleaning as its normalizer."""
    from transformers import CLIPTokenizer, PreTrainedTokenizerFast

    vocab = {_SPECIAL_TOKENS.get(token, token): index for token, index in tokenizer.encoder.items()}
    merges = sorted(tokenizer.bpe_ranks, key=tokenizer.bpe_ranks.get)
    with tempfile.TemporaryDirectory(prefix="st-contrast-bpe-") as directory:
        (Path(directory) / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        lines = ["#version: 0.2", *(" ".join(merge) for merge in merges)]
        (Path(directory) / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        backend = CLIPTokenizer.from_pretrained(directory).backend_tokenizer
    backend.normalizer = _open_clip_normalizer()
    # the generic class loads tokenizer.json as it is; CLIPTokenizer would rebuild transformers' own normalizer
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<|endoftext|>", model_max_length=context_length, **special
    )


def _image_processor(preprocess: dict[str, Any], image_size: int) -> Any:
    """open_clip's evaluation transform (resize, centre crop, RGB, normalise) as a transformers CLIP image
    processor (the PIL one: open_clip resizes PIL images too)."""
    from transformers.models.auto.image_processing_auto import get_image_processor_class_from_name

    resize_mode = preprocess.get("resize_mode", "shortest")
    interpolation = preprocess.get("interpolation", "bicubic")
    if resize_mode not in _RESIZE_MODES:
        raise ValueError(f"open_clip resize_mode {resize_mode!r} has no CLIP image processor form ({_RESIZE_MODES})")
    if interpolation not in _INTERPOLATIONS:
        raise ValueError(f"open_clip interpolation {interpolation!r} is not one of {sorted(_INTERPOLATIONS)}")
    square = {"height": image_size, "width": image_size}
    # the PIL processor where transformers has one by that name (5.x releases that split PIL and torchvision)
    pil = get_image_processor_class_from_name("CLIPImageProcessorPil")
    return (pil or get_image_processor_class_from_name("CLIPImageProcessor"))(
        size={"shortest_edge": image_size} if resize_mode == "shortest" else square,
        crop_size=square,
        do_center_crop=resize_mode == "shortest",
        resample=_INTERPOLATIONS[interpolation],
        image_mean=list(preprocess["mean"]),
        image_std=list(preprocess["std"]),
        do_convert_rgb=True,
    )


def _probe_images(size: int) -> list[Any]:
    """Deterministic noise images: one at the model's input size, one that is only centre-cropped, one that is
    halved and cropped. Both croppers agree where the pixels left over are even: transformers rounds an odd
    offset down, torchvision (open_clip) to the nearest, so such images differ by a one-pixel shift."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    shapes = ((size, size), (size + 2, size), (2 * size, 2 * size + 4))
    return [Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)) for shape in shapes]


def _max_differences(model: Any, tokenizer: Any, preprocess: dict[str, Any], output_dir: str) -> tuple[float, float]:
    """open_clip's normalised embeddings of the probe texts and images against the converted model's, as plain
    Sentence Transformers loads it from ``output_dir``."""
    import torch
    from open_clip.transform import PreprocessCfg, image_transform_v2
    from sentence_transformers import SentenceTransformer

    converted = SentenceTransformer(output_dir, device="cpu")
    images = _probe_images(_pair(model.visual.image_size)[0])
    transform = image_transform_v2(PreprocessCfg(**preprocess), is_train=False)
    with torch.no_grad():
        texts = model.encode_text(tokenizer(list(_PROBE_TEXTS)), normalize=True)
        pixels = model.encode_image(torch.stack([transform(image) for image in images]), normalize=True)
    text_embeddings = converted.encode(list(_PROBE_TEXTS), convert_to_tensor=True, normalize_embeddings=True)
    image_embeddings = converted.encode(images, convert_to_tensor=True, normalize_embeddings=True)
    return (texts - text_embeddings).abs().max().item(), (pixels - image_embeddings).abs().max().item()


def convert_open_clip(
    model: Any,
    output_dir: str | Path,
    *,
    pretrained: str | None = None,
    tokenizer: Any = None,
    normalize: bool = True,
    verify: bool = True,
) -> OpenClipConversion:
    """Convert an open_clip CLIP into a Sentence Transformers model that loads without open_clip or st_contrast.

    The output folder is both a transformers ``CLIPModel`` (with ``CLIPProcessor``: tokenizer and image processor)
    and a Sentence Transformers model: ``Transformer`` (text through ``get_text_features``, images through
    ``get_image_features``) + ``Normalize``. Embeddings equal open_clip's ``encode_text`` / ``encode_image`` of
    its tokenizer and evaluation transform; open_clip's ``logit_scale`` is kept as ``CLIPModel.logit_scale``.

    Args:
        model: An open_clip model, or what :func:`load_open_clip` loads: a folder in open_clip's format,
            ``hf-hub:org/name``, or a built-in architecture with ``pretrained``.
        output_dir: Where to write the model.
        pretrained: A pretrained tag or checkpoint file (``epoch_N.pt``) for a built-in architecture name.
        tokenizer: The open_clip tokenizer of a model object (default: open_clip's CLIP BPE tokenizer at the
            model's context length).
        normalize: Append ``Normalize`` (cosine similarity = dot product, as open_clip's zero-shot classifiers).
        verify: Reload the written model as plain Sentence Transformers does and compare its embeddings of probe
            texts and images with open_clip's (at most :data:`VERIFY_TOLERANCE` apart, else ``ValueError``).

    Returns:
        An :class:`OpenClipConversion`: the folder, open_clip's logit scale and the measured differences.

    Raises:
        ValueError: When the model is not convertible exactly (:func:`open_clip_refusal` says why), or the
            converted model embeds differently.

    Example:
        ::

            from sentence_transformers import SentenceTransformer
            from st_contrast.recipes import convert_open_clip

            convert_open_clip("ViT-B-32", "output/vit-b-32", pretrained="logs/run/checkpoints/epoch_32.pt")
            model = SentenceTransformer("output/vit-b-32")  # no open_clip needed from here on

    References:
        - Cherti et al., "Reproducible scaling laws for contrastive language-image learning", CVPR 2023,
          https://arxiv.org/abs/2212.07143 (OpenCLIP)
        - Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", ICML 2021,
          https://arxiv.org/abs/2103.00020
    """
    from open_clip.transform import PreprocessCfg
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sentence_transformer.modules import Normalize
    from transformers import CLIPModel, CLIPProcessor

    source = model if isinstance(model, str) else type(model).__name__
    if isinstance(model, str):
        model, tokenizer = load_open_clip(model, pretrained)
    else:
        open_clip = _require_open_clip()
        tokenizer = tokenizer or open_clip.tokenizer.SimpleTokenizer(context_length=model.context_length)
    if reason := open_clip_refusal(model, tokenizer):
        raise ValueError(f"cannot convert open_clip model {source!r}: {reason}.")
    # open_clip's defaults (OpenAI mean / std, bicubic, shortest side) under what the checkpoint set
    preprocess = {
        **asdict(PreprocessCfg()),
        "size": _pair(model.visual.image_size)[0],
        **(getattr(model.visual, "preprocess_cfg", None) or {}),
    }
    try:  # settings found while mapping them (activation, LayerNorm eps, preprocessing): nothing written yet
        config = _clip_config(model, tokenizer)
        image_processor = _image_processor(preprocess, config.vision_config.image_size)
    except ValueError as error:
        raise ValueError(f"cannot convert open_clip model {source!r}: {error}.") from error
    clip = CLIPModel(config).eval()
    clip.load_state_dict(_transformers_state_dict(model), strict=True)
    processor = CLIPProcessor(
        image_processor=image_processor, tokenizer=_clip_tokenizer(tokenizer, model.context_length)
    )
    with tempfile.TemporaryDirectory(prefix="st-contrast-open-clip-") as directory:
        clip.save_pretrained(directory)
        processor.save_pretrained(directory)
        modules = [Transformer(directory), Normalize()] if normalize else [Transformer(directory)]
        SentenceTransformer(modules=modules, device="cpu").save(str(output_dir))
    report = OpenClipConversion(str(output_dir), clip.logit_scale.detach().exp().item())
    if verify:
        report.text_difference, report.image_difference = _max_differences(
            model, tokenizer, preprocess, str(output_dir)
        )
        if max(report.text_difference, report.image_difference) > VERIFY_TOLERANCE:
            raise ValueError(
                f"the model converted from open_clip {source!r} embeds differently from open_clip: largest "
                f"difference {report.text_difference:.3g} (texts), {report.image_difference:.3g} (images), "
                f"tolerance {VERIFY_TOLERANCE:g}; it is left in {output_dir} for inspection."
            )
    logger.info("converted open_clip %s: %s", source, report)
    return report


def load_converted_open_clip(name: str, pretrained: str | None = None, **load_kwargs: Any) -> Any:
    """An open_clip checkpoint as a Sentence Transformers model, in one step: converted (and verified) in a
    temporary folder by :func:`convert_open_clip`, then loaded by :func:`st_contrast.load_model` with
    ``load_kwargs`` (``packed=False``, ``device``...). ``model.save(...)`` then writes the plain model."""
    from st_contrast.model_io import load_model

    with tempfile.TemporaryDirectory(prefix="st-contrast-open-clip-") as directory:
        convert_open_clip(name, directory, pretrained=pretrained)
        return load_model(directory, **load_kwargs)
