"""Image <-> text retrieval over a local file of captioned images, evaluated by MTEB's ``AbsTaskRetrieval``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from st_contrast.evaluation.image_files import read_image_file
from st_contrast.evaluation.in_memory_retrieval import InMemoryRetrievalTask
from st_contrast.evaluation.metadata import local_task_metadata
from st_contrast.evaluation.rng import preserved_rng_state

__all__ = ["DIRECTIONS", "LocalImageTextRetrievalTask", "image_retrieval_task_from_file"]

DIRECTIONS = ("t2i", "i2t")
"""``t2i``: captions are the queries, images the corpus; ``i2t``: the reverse."""


class LocalImageTextRetrievalTask(InMemoryRetrievalTask):
    """Text -> image or image -> text retrieval over captioned images held in memory.

    The captions are deduplicated: every image whose caption is a query's text is relevant to it (``t2i``), and an
    image query's relevant document is its caption (``i2t``). MTEB's ``AbsTaskRetrieval`` searches exhaustively by
    the model's similarity. The main score is ``hit_rate_at_1``: the share of queries whose top result is relevant,
    what CLIP papers call R@1 (``hit_rate_at_5`` / ``_10`` are R@5 / R@10; with one relevant item per query they
    equal MTEB's ``recall_at_k``).

    Args:
        images: PIL images.
        captions: Each image's caption.
        name: Task name.
        direction: ``"t2i"`` or ``"i2t"``.
        split: Split name the results are reported under.
        source: Where the data comes from, recorded in the metadata.
    """

    def __init__(
        self,
        images: Sequence[Any],
        captions: Sequence[str],
        *,
        name: str,
        direction: str = "t2i",
        split: str = "test",
        source: str | Path = "memory",
        seed: int = 42,
    ) -> None:
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        if len(images) != len(captions):
            raise ValueError(f"{len(images)} images but {len(captions)} captions")
        self.metadata = local_task_metadata(
            name=name,
            task_type="Any2AnyRetrieval",
            main_score="hit_rate_at_1",
            source=source,
            split=split,
            category=direction,
            modalities=("text", "image"),
        )
        texts = list(dict.fromkeys(captions))
        text_ids = {text: f"t{number}" for number, text in enumerate(texts)}
        image_ids = [f"i{number}" for number in range(len(images))]
        texts_data = {"id": [text_ids[text] for text in texts], "text": texts}
        images_data = {"id": image_ids, "image": list(images)}
        if direction == "t2i":
            self._queries, self._corpus = texts_data, images_data
            self._qrels = {text_ids[text]: {} for text in texts}
            for image_id, caption in zip(image_ids, captions, strict=True):
                self._qrels[text_ids[caption]][image_id] = 1
        else:
            self._queries, self._corpus = images_data, texts_data
            self._qrels = {
                image_id: {text_ids[caption]: 1} for image_id, caption in zip(image_ids, captions, strict=True)
            }
        with preserved_rng_state():  # MTEB's constructor reseeds random, NumPy and torch globally
            super().__init__(seed=seed)


def image_retrieval_task_from_file(
    path: str | Path,
    name: str | None = None,
    *,
    direction: str = "t2i",
    image_column: str = "image",
    text_column: str = "caption",
    split: str = "test",
) -> LocalImageTextRetrievalTask:
    """An image-text retrieval task from a data file (JSON Lines, CSV, parquet...) with an image column (paths
    relative to the file, or bytes) and a caption column (see :class:`LocalImageTextRetrievalTask`).

    Example:
        ::

            from st_contrast.evaluation import evaluate_model, image_retrieval_task_from_file

            task = image_retrieval_task_from_file("shapes/test.jsonl", direction="t2i")
            print(evaluate_model(model, [task])["shapes-test-t2i"]["metrics"]["hit_rate_at_1"])  # R@1
    """
    path = Path(path)
    images, captions = read_image_file(path, image_column, text_column)
    return LocalImageTextRetrievalTask(
        images,
        [str(caption) for caption in captions],
        name=name or f"{path.resolve().parent.name}-{path.name.split('.')[0]}-{direction}",
        direction=direction,
        split=split,
        source=path.resolve(),
    )
