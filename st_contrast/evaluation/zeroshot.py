"""Zero-shot image classification over a local file, evaluated by MTEB's ``AbsTaskZeroShotClassification``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from datasets import Dataset
from mteb.abstasks.zeroshot_classification import AbsTaskZeroShotClassification

from st_contrast.evaluation.image_files import read_image_file
from st_contrast.evaluation.metadata import local_task_metadata
from st_contrast.evaluation.rng import preserved_rng_state

__all__ = ["LocalZeroShotTask", "zeroshot_task_from_file"]


class LocalZeroShotTask(AbsTaskZeroShotClassification):
    """Zero-shot image classification (CLIP's protocol) over images and labels held in memory.

    Each class name becomes a text through ``template`` (``"a handwritten digit {}"``); MTEB's own evaluator embeds
    the texts and the images and predicts, for each image, the class whose text is most similar. Metrics: accuracy
    (main score), macro / weighted F1, precision and recall.

    Args:
        images: PIL images.
        labels: Each image's class name (one of ``classes``).
        classes: The class names, in order; default: the distinct labels, sorted.
        template: The prompt template, with ``{}`` where the class name goes.
        name: Task name (results key and MTEB JSON file name).
        split: Split name the results are reported under.
        source: Where the data comes from, recorded in the metadata.

    Example:
        ::

            from st_contrast.evaluation import LocalZeroShotTask, evaluate_model

            task = LocalZeroShotTask(images, ["cat", "dog"], template="a photo of a {}", name="pets")
            print(evaluate_model(model, [task])["pets"]["main_score"])  # accuracy

    References:
        - Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", ICML 2021,
          https://arxiv.org/abs/2103.00020
    """

    input_column_name = "image"
    label_column_name = "label"

    def __init__(
        self,
        images: Sequence[Any],
        labels: Sequence[str],
        *,
        name: str,
        classes: Sequence[str] | None = None,
        template: str = "{}",
        split: str = "test",
        source: str | Path = "memory",
        seed: int = 42,
    ) -> None:
        if "{}" not in template:
            raise ValueError(f"template {template!r} needs a '{{}}' where the class name goes")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        classes = list(classes) if classes is not None else sorted(set(labels))
        unknown = sorted(set(labels) - set(classes))
        if unknown:
            raise ValueError(f"labels {unknown[:5]} are not among the classes {classes}")
        self.metadata = local_task_metadata(
            name=name,
            task_type="ZeroShotClassification",
            main_score="accuracy",
            source=source,
            split=split,
            category="i2t",
            modalities=("image", "text"),
        )
        self.classes = classes
        self.template = template
        self._images = list(images)
        self._labels = [classes.index(label) for label in labels]
        with preserved_rng_state():  # MTEB's constructor reseeds random, NumPy and torch globally
            super().__init__(seed=seed)

    def get_candidate_labels(self) -> list[str]:
        """The class prompts: ``template`` filled with each class name, in class order."""
        return [self.template.format(name) for name in self.classes]

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        """Build the in-memory dataset (no download, no cache files)."""
        if self.data_loaded:
            return
        data = Dataset.from_dict({"image": self._images, "label": self._labels})
        self.dataset = {self.metadata.eval_splits[0]: data}
        self.data_loaded = True

    def unload_data(self) -> None:
        """Drop the dataset; the images stay, so ``load_data`` can rebuild it."""
        self.dataset = None
        self.data_loaded = False


def zeroshot_task_from_file(
    path: str | Path,
    name: str | None = None,
    *,
    template: str = "{}",
    classes: Sequence[str] | None = None,
    image_column: str = "image",
    label_column: str = "label",
    split: str = "test",
) -> LocalZeroShotTask:
    """A zero-shot classification task from a data file (JSON Lines, CSV, parquet...) with an image column (paths
    relative to the file, or bytes) and a label column of class names (see :class:`LocalZeroShotTask`).

    Example:
        ::

            from st_contrast.evaluation import evaluate_model, zeroshot_task_from_file

            task = zeroshot_task_from_file("digits/test.jsonl", template="a handwritten digit {}")
            print(evaluate_model(model, [task])["digits-test"]["main_score"])
    """
    path = Path(path)
    images, labels = read_image_file(path, image_column, label_column)
    return LocalZeroShotTask(
        images,
        [str(label) for label in labels],
        name=name or f"{path.resolve().parent.name}-{path.name.split('.')[0]}",
        classes=classes,
        template=template,
        split=split,
        source=path.resolve(),
    )
