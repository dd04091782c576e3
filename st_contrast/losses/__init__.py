"""Contrastive losses for Sentence Transformers: one loss per file, each built on ST's losses or GradCache."""

from __future__ import annotations

from st_contrast.losses.cached_info_nce import CachedInfoNCELoss
from st_contrast.losses.clip import CLIPLoss
from st_contrast.losses.global_contrastive import GlobalContrastiveLoss
from st_contrast.losses.glofnd import GloFND
from st_contrast.losses.gradcache import GradCacheLoss
from st_contrast.losses.info_nce import InfoNCELoss
from st_contrast.losses.sample_state import without_sample_state
from st_contrast.losses.siglip import SigLIPLoss
from st_contrast.losses.simcse import SimCSELoss

__all__ = [
    "CLIPLoss",
    "CachedInfoNCELoss",
    "GloFND",
    "GlobalContrastiveLoss",
    "GradCacheLoss",
    "InfoNCELoss",
    "SigLIPLoss",
    "SimCSELoss",
    "without_sample_state",
]
