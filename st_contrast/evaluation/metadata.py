"""MTEB ``TaskMetadata`` for tasks whose data comes from local files instead of the Hugging Face hub."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mteb.abstasks.task_metadata import TaskMetadata

__all__ = ["LOCAL_REVISION", "local_task_metadata"]

LOCAL_REVISION = "local"
"""The ``dataset.revision`` recorded for local tasks (MTEB requires one; local files have none)."""


def local_task_metadata(
    *,
    name: str,
    task_type: str,
    main_score: str,
    source: str | Path,
    split: str = "test",
    languages: Sequence[str] = ("eng-Latn",),
    prompt: str | dict[str, str] | None = None,
    description: str | None = None,
    category: str = "t2t",
    modalities: Sequence[str] = ("text",),
) -> TaskMetadata:
    """Metadata of a local MTEB task: ``dataset.path`` records the source file or directory.

    Nothing in it points at the hub: local tasks load their data themselves, so MTEB never calls
    ``datasets.load_dataset`` for them.

    Args:
        name: Task name, used as the key of the results and the name of MTEB's per-task JSON file.
        task_type: MTEB task type (``"STS"``, ``"Retrieval"``).
        main_score: The metric MTEB reports as ``main_score``.
        source: The local file or directory the data comes from.
        split: The split name the results are reported under.
        languages: Language-script codes of the data (MTEB requires them; default English).
        prompt: Optional instruction prompt for instruction-tuned models (a string, or
            ``{"query": ..., "document": ...}``).
        description: Free text; defaults to one naming the source.
        category: MTEB's task category (``"t2t"``; image tasks: ``"i2t"``, ``"t2i"``).
        modalities: The modalities the task holds (``["image", "text"]`` for image tasks).
    """
    return TaskMetadata(
        name=name,
        description=description or f"Local {task_type} task read from {source}.",
        dataset={"path": str(source), "revision": LOCAL_REVISION},
        type=task_type,
        category=category,
        modalities=list(modalities),
        eval_splits=[split],
        eval_langs=list(languages),
        main_score=main_score,
        prompt=prompt,
        bibtex_citation="",
    )
