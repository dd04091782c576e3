"""``evaluate_model``: run MTEB 2.x on local and named tasks and return plain per-task scores."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from mteb.abstasks.abstask import AbsTask

from st_contrast.evaluation.errors import HubUnavailableError
from st_contrast.evaluation.image_retrieval import LocalImageTextRetrievalTask
from st_contrast.evaluation.retrieval import LocalRetrievalTask
from st_contrast.evaluation.rng import preserved_rng_state
from st_contrast.evaluation.specs import TaskSpec, resolve_tasks
from st_contrast.evaluation.sts import LocalSTSTask
from st_contrast.evaluation.zeroshot import LocalZeroShotTask

__all__ = ["evaluate_model"]

logger = logging.getLogger(__name__)

_LOCAL_TASKS = (LocalSTSTask, LocalRetrievalTask, LocalZeroShotTask, LocalImageTextRetrievalTask)
_NON_METRIC_KEYS = {"hf_subset", "languages", "mteb_version"}


def _hub_offline() -> bool:
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency of sentence-transformers
        return os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")


def _load_named_task(task: AbsTask) -> None:
    """Load a hub task's data now, turning any failure into an error that says the hub is needed."""
    try:
        task.load_data()
    except Exception as error:  # datasets / huggingface_hub raise many types for "no network"
        dataset = task.metadata.dataset.get("path")
        why = "HF_HUB_OFFLINE=1 is set" if _hub_offline() else "the Hugging Face hub may be unreachable"
        raise HubUnavailableError(
            f"MTEB task {task.metadata.name!r} could not load its dataset {dataset!r} from the Hugging Face hub "
            f"({why}): {type(error).__name__}: {error}. Named MTEB tasks need the hub (or a datasets cache that "
            "already holds them); offline, evaluate on local files instead: 'sts:FILE' or 'retrieval:BEIR_DIR'."
        ) from error


@contextmanager
def _quiet(show_progress_bar: bool) -> Iterator[None]:
    """Hide datasets' ``map`` progress bars and ST's renamed-method warnings that MTEB triggers."""
    import datasets

    hide = not show_progress_bar and datasets.is_progress_bar_enabled()
    if hide:
        datasets.disable_progress_bars()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*get_sentence_embedding_dimension.*", category=FutureWarning)
            yield
    finally:
        if hide:
            datasets.enable_progress_bars()


def _finite_or_none(value: Any) -> Any:
    """NaN (e.g. nAUC on a handful of queries) becomes None, so results.json stays valid JSON."""
    return None if isinstance(value, float) and math.isnan(value) else value


def _summarise(task: AbsTask, task_result: Any) -> dict[str, Any]:
    """``{"main_score", "main_metric", "splits", "metrics", "scores"}`` from an MTEB ``TaskResult``."""
    scores = {
        split: {
            entry["hf_subset"]: {
                key: _finite_or_none(value) for key, value in entry.items() if key not in _NON_METRIC_KEYS
            }
            for entry in entries
        }
        for split, entries in task_result.scores.items()
    }
    per_subset = [metrics for subsets in scores.values() for metrics in subsets.values()]
    metrics = {}
    for key in per_subset[0]:
        values = [subset.get(key) for subset in per_subset]
        if all(isinstance(value, (int, float)) for value in values):
            metrics[key] = float(np.mean(values))
        elif all(value is None or isinstance(value, (int, float)) for value in values):
            metrics[key] = None
    return {
        "main_score": _finite_or_none(float(task_result.get_score())),
        "main_metric": task.metadata.main_score,
        "splits": sorted(scores),
        "metrics": metrics,
        "scores": scores,
    }


def _task_prompt(task: AbsTask) -> dict[str, str]:
    """The ``prompt`` of a local task spec as MTEB prompt keys (by task type, the keys MTEB accepts for local tasks)."""
    prompt = task.metadata.prompt if isinstance(task, _LOCAL_TASKS) else None
    if isinstance(prompt, str) and prompt:
        return {task.metadata.type: prompt}
    if isinstance(prompt, dict):
        return {f"{task.metadata.type}-{kind}": text for kind, text in prompt.items() if text}
    return {}


@contextmanager
def _prompts(model: Any, added: dict[str, str]) -> Iterator[None]:
    """``model.prompts`` plus ``added`` for the duration (MTEB hands a Sentence Transformers model prompts only from
    there, never from a task's own metadata), restored afterwards."""
    prompts = getattr(model, "prompts", None)
    if not added or not isinstance(prompts, dict):
        yield
        return
    original = dict(prompts)
    model.prompts = {**prompts, **added}
    try:
        yield
    finally:
        model.prompts = original


def _with_modalities(model: Any) -> Any:
    """A Sentence Transformers model that takes images, wrapped for MTEB with its modalities declared: MTEB's
    metadata for an in-memory model says text only, and MTEB refuses image tasks for it. Others pass unchanged."""
    from sentence_transformers import SentenceTransformer

    modalities = [m for m in getattr(model, "modalities", ["text"]) if isinstance(m, str)]
    if not isinstance(model, SentenceTransformer) or modalities == ["text"]:
        return model
    from mteb.models import SentenceTransformerEncoderWrapper

    wrapper = SentenceTransformerEncoderWrapper(model)
    wrapper.mteb_model_meta = wrapper.mteb_model_meta.model_copy(update={"modalities": modalities})
    return wrapper


def _file_name(task_name: str) -> str:
    return re.sub(r"[^\w.-]+", "__", task_name) + ".json"


def evaluate_model(
    model: Any,
    tasks: Sequence[TaskSpec] | TaskSpec,
    batch_size: int = 32,
    output_folder: str | Path | None = None,
    *,
    base_dir: str | Path | None = None,
    show_progress_bar: bool = False,
) -> dict[str, dict[str, Any]]:
    """Evaluate ``model`` with MTEB 2.x on local and named tasks.

    Local tasks (``sts:FILE``, ``retrieval:BEIR_DIR`` or their dict forms) need no network: their data is read
    from disk, MTEB's result cache is not used, and nothing is written outside ``output_folder``. Named MTEB
    tasks fetch their data from the Hugging Face hub; when it is unreachable a :class:`HubUnavailableError`
    says so. The caller's random state (Python, NumPy, torch) is restored afterwards, since MTEB reseeds it.

    Args:
        model: A ``SentenceTransformer`` (or any model ``mteb.evaluate`` accepts).
        tasks: Task specs (see :func:`~st_contrast.evaluation.resolve_task`): strings such as ``"sts:PATH"``,
            ``"retrieval:DIR"``, ``"STSBenchmark"``, dicts such as ``{"type": "sts", "path": ...}``, or MTEB tasks.
        batch_size: Encoding batch size.
        output_folder: When given, writes ``results.json`` (the returned dict) and MTEB's per-task result JSON
            (``mteb/<task>.json``) there.
        base_dir: Directory that relative paths in dict specs are relative to (e.g. the YAML config's).
        show_progress_bar: Show encoding and data-preparation progress bars.

    Returns:
        ``{task name: {"main_score": float, "main_metric": str, "splits": [...], "metrics": {metric: float},
        "scores": {split: {subset: {metric: float}}}}}`` in task order. ``metrics`` holds every metric MTEB
        computed (averaged over splits/subsets when a task has several; None where undefined, e.g. MTEB's nAUC
        metrics on very few queries); ``main_score`` is MTEB's (e.g. ``cosine_spearman`` for STS,
        ``ndcg_at_10`` for retrieval), unscaled (0.8203, not 82.03).

    Example:
        ::

            from sentence_transformers import SentenceTransformer
            from st_contrast.evaluation import evaluate_model

            model = SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2")
            results = evaluate_model(
                model,
                [
                    "sts:../shared/data/sts/stsbenchmark/test.tsv.gz",
                    "retrieval:../shared/data/retrieval/dbpedia_entity_subset",
                ],
                output_folder="output/eval",
            )
            print(results["stsbenchmark-test"]["main_score"])  # 0.8203
    """
    import mteb

    task_list = resolve_tasks(tasks, base_dir)
    # A local task with its own prompt runs alone, with that prompt registered under its task type.
    plain = [task for task in task_list if not _task_prompt(task)]
    runs = [(plain, {})] if plain else []
    runs += [([task], _task_prompt(task)) for task in task_list if _task_prompt(task)]
    task_results = []
    loaded_here: list[AbsTask] = []
    with preserved_rng_state(), _quiet(show_progress_bar):
        try:
            for task in task_list:
                if not isinstance(task, _LOCAL_TASKS) and not task.is_aggregate and not task.data_loaded:
                    _load_named_task(task)
                    loaded_here.append(task)
            for run_tasks, prompts in runs:
                with _prompts(model, prompts):
                    model_result = mteb.evaluate(
                        _with_modalities(model),
                        run_tasks,
                        cache=None,
                        overwrite_strategy="always",
                        co2_tracker=False,
                        encode_kwargs={"batch_size": batch_size, "show_progress_bar": show_progress_bar},
                        show_progress_bar=show_progress_bar,
                    )
                task_results += model_result.task_results
        finally:
            for task in loaded_here:
                task.unload_data()
    by_name = {task_result.task_name: task_result for task_result in task_results}
    results = {task.metadata.name: _summarise(task, by_name[task.metadata.name]) for task in task_list}
    if output_folder is not None:
        output = Path(output_folder)
        (output / "mteb").mkdir(parents=True, exist_ok=True)
        for name, task_result in by_name.items():
            task_result.to_disk(output / "mteb" / _file_name(name))
        (output / "results.json").write_text(json.dumps(results, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return results
