"""Ready-made models of the methods st_contrast reproduces, composed from modules, losses and adapters:
LLM2Vec (bidirectional decoders with instruction-aware pooling), SGPT (BitFit decoders, asymmetric towers) and
image-text models (two towers routed by modality, LiT locking, CLIP / SigLIP checkpoints)."""

from __future__ import annotations

from st_contrast.recipes.image_text import clip_model, lock_tower, two_tower_model, vision_tower
from st_contrast.recipes.llm2vec import llm2vec_model
from st_contrast.recipes.sgpt import asymmetric_model, linear_stack, sgpt_bitfit_model

__all__ = [
    "asymmetric_model",
    "clip_model",
    "linear_stack",
    "llm2vec_model",
    "lock_tower",
    "sgpt_bitfit_model",
    "two_tower_model",
    "vision_tower",
]
