"""st_contrast: fast, correct contrastive training of text embedding models on Sentence Transformers.

Importing the package is cheap: the public names below load their modules on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

_LAZY_NAMES = {
    # training
    "ContrastiveTrainer": "st_contrast.training",
    "MonitoredTrainer": "st_contrast.training",
    "enable_monitoring": "st_contrast.callbacks",
    # model I/O
    "load_model": "st_contrast.model_io",
    "export_model": "st_contrast.model_io",
    "load_adapter_model": "st_contrast.model_io",
    "relink_adapter_base": "st_contrast.model_io",
    # modules and modes
    "FlashTransformer": "st_contrast.modules",
    "to_flash": "st_contrast.modules",
    "enable_packing": "st_contrast.modules",
    "disable_packing": "st_contrast.modules",
    "BidirectionalTransformer": "st_contrast.modules",
    "BidirectionalFlashTransformer": "st_contrast.modules",
    "InstructionPooling": "st_contrast.modules",
    "set_causal": "st_contrast.modules",
    "available_backends": "st_contrast.attention",
    # adapters
    "apply_bitfit": "st_contrast.adapters",
    "add_lora": "st_contrast.adapters",
    "freeze": "st_contrast.adapters",
    "lock": "st_contrast.adapters",
    "merge_and_save": "st_contrast.adapters",
    # losses
    "InfoNCELoss": "st_contrast.losses",
    "CachedInfoNCELoss": "st_contrast.losses",
    "CLIPLoss": "st_contrast.losses",
    "SigLIPLoss": "st_contrast.losses",
    "SimCSELoss": "st_contrast.losses",
    "GloFND": "st_contrast.losses",
    "GlobalContrastiveLoss": "st_contrast.losses",
    "GradCacheLoss": "st_contrast.losses",
    # recipes and evaluation
    "llm2vec_model": "st_contrast.recipes",
    "sgpt_bitfit_model": "st_contrast.recipes",
    "asymmetric_model": "st_contrast.recipes",
    "evaluate_model": "st_contrast.evaluation",
}

__all__ = ["__version__", *_LAZY_NAMES]


def __getattr__(name: str) -> Any:
    if name in _LAZY_NAMES:
        return getattr(importlib.import_module(_LAZY_NAMES[name]), name)
    raise AttributeError(f"module 'st_contrast' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
