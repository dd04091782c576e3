"""Ready-made models of the methods st_contrast reproduces, composed from modules, losses and adapters:
LLM2Vec (bidirectional decoders with instruction-aware pooling) and SGPT (BitFit decoders, asymmetric towers)."""

from __future__ import annotations

from st_contrast.recipes.llm2vec import llm2vec_model
from st_contrast.recipes.sgpt import asymmetric_model, linear_stack, sgpt_bitfit_model

__all__ = ["asymmetric_model", "linear_stack", "llm2vec_model", "sgpt_bitfit_model"]
