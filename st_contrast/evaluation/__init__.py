"""Offline MTEB 2.x evaluation: STS, retrieval, zero-shot image classification and image-text retrieval tasks over
local files, and named MTEB tasks from the hub.

Importing this package imports ``mteb`` (a few seconds); ``st_contrast`` itself loads it only on first use.
"""

from __future__ import annotations

from st_contrast.evaluation.errors import DataFormatError, HubUnavailableError, TaskSpecError
from st_contrast.evaluation.evaluate import evaluate_model
from st_contrast.evaluation.image_retrieval import LocalImageTextRetrievalTask, image_retrieval_task_from_file
from st_contrast.evaluation.report import format_results_table
from st_contrast.evaluation.retrieval import BEIRData, LocalRetrievalTask, read_beir_dir, retrieval_task_from_beir
from st_contrast.evaluation.rng import preserved_rng_state
from st_contrast.evaluation.specs import SPEC_KEYS, TaskSpec, resolve_task, resolve_tasks
from st_contrast.evaluation.sts import LocalSTSTask, STSPairs, read_sts_file, sts_task_from_file
from st_contrast.evaluation.zeroshot import LocalZeroShotTask, zeroshot_task_from_file

__all__ = [
    "BEIRData",
    "DataFormatError",
    "HubUnavailableError",
    "LocalImageTextRetrievalTask",
    "LocalRetrievalTask",
    "LocalSTSTask",
    "LocalZeroShotTask",
    "SPEC_KEYS",
    "STSPairs",
    "TaskSpec",
    "TaskSpecError",
    "evaluate_model",
    "format_results_table",
    "image_retrieval_task_from_file",
    "preserved_rng_state",
    "read_beir_dir",
    "read_sts_file",
    "resolve_task",
    "resolve_tasks",
    "retrieval_task_from_beir",
    "sts_task_from_file",
    "zeroshot_task_from_file",
]
