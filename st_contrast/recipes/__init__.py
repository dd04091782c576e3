"""Ready-made models of the methods st_contrast reproduces, composed from modules, losses and adapters:
LLM2Vec (bidirectional decoders with instruction-aware pooling), SGPT (BitFit decoders, asymmetric towers) and
image-text models (two towers routed by modality, LiT locking, CLIP / SigLIP checkpoints, open_clip checkpoints
converted to plain Sentence Transformers models)."""

from __future__ import annotations

from st_contrast.recipes.image_text import clip_model, lock_tower, two_tower_model, vision_tower
from st_contrast.recipes.llm2vec import llm2vec_model
from st_contrast.recipes.open_clip_checkpoint import OpenClipConversion, convert_open_clip, load_converted_open_clip
from st_contrast.recipes.sgpt import asymmetric_model, linear_stack, sgpt_bitfit_model

__all__ = [
    "OpenClipConversion",
    "asymmetric_model",
    "clip_model",
    "convert_open_clip",
    "linear_stack",
    "llm2vec_model",
    "load_converted_open_clip",
    "lock_tower",
    "sgpt_bitfit_model",
    "two_tower_model",
    "vision_tower",
]
