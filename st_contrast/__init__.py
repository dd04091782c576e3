"""st_contrast: fast, correct contrastive training of text embedding models on Sentence Transformers.

Importing the package is cheap: the public names below load their modules on first use.
"""

from __future__ import annotations

from st_contrast.lazy_exports import lazy_exports

__version__ = "0.2.0"

_LAZY_NAMES = {
    # training
    "ContrastiveTrainer": "training",
    "MonitoredTrainer": "training",
    "enable_monitoring": "callbacks",
    # model I/O
    "load_model": "model_io",
    "export_model": "model_io",
    "load_adapter_model": "model_io",
    "relink_adapter_base": "model_io",
    # modules and modes
    "FlashTransformer": "modules",
    "to_flash": "modules",
    "enable_packing": "modules",
    "disable_packing": "modules",
    "BidirectionalTransformer": "modules",
    "BidirectionalFlashTransformer": "modules",
    "InstructionPooling": "modules",
    "set_causal": "modules",
    "available_backends": "attention",
    # adapters
    "apply_bitfit": "adapters",
    "add_lora": "adapters",
    "freeze": "adapters",
    "lock": "adapters",
    "merge_and_save": "adapters",
    # losses
    "InfoNCELoss": "losses",
    "CachedInfoNCELoss": "losses",
    "CLIPLoss": "losses",
    "SigLIPLoss": "losses",
    "SimCSELoss": "losses",
    "GloFND": "losses",
    "GlobalContrastiveLoss": "losses",
    "GradCacheLoss": "losses",
    "without_sample_state": "losses",
    # recipes and evaluation
    "llm2vec_model": "recipes",
    "sgpt_bitfit_model": "recipes",
    "asymmetric_model": "recipes",
    "evaluate_model": "evaluation",
}

__all__ = ["__version__", *_LAZY_NAMES]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY_NAMES)
