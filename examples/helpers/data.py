"""The examples' data (../shared/data, see its README; nothing is downloaded) and their STS-B scoring."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from st_contrast.data import load_dataset_spec

if TYPE_CHECKING:  # st_contrast.evaluation imports mteb (seconds): loaded when a score is asked for
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer

    from st_contrast.evaluation import LocalSTSTask

__all__ = ["NLI", "SHARED_DATA", "STSB", "nli_triplets", "snli_sentences", "stsb_spearman", "stsb_task"]

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
NLI = SHARED_DATA / "nli"
STSB = SHARED_DATA / "sts" / "stsbenchmark"


def _shared(path: Path) -> Path:
    if not path.exists():
        raise SystemExit(f"The shared data is missing: expected {path} (see ../shared/data/README.md).")
    return path


def snli_sentences(limit: int | None = None, split: str = "train") -> list[str]:
    """SNLI premises and hypotheses (deduplicated, in file order)."""
    rows = load_dataset_spec({"name": "snli", "path": str(_shared(NLI / "snli_sample_20k" / f"{split}.tsv.gz"))})
    sentences = list(dict.fromkeys(text for row in rows for text in (row["premise"], row["hypothesis"])))
    return sentences[:limit] if limit else sentences


def nli_triplets(limit: int) -> Dataset:
    """(anchor, positive, negative) NLI triplets: entailment positives, contradiction negatives."""
    path = _shared(NLI / "derived" / "triplets.tsv.gz")
    return load_dataset_spec({"name": "nli", "path": str(path), "objective": "triplet", "max_rows": limit})


def stsb_task(split: str = "dev", pairs: int | None = None) -> LocalSTSTask:
    """STS-B ``split`` (its first ``pairs`` pairs, or all) as an MTEB task named ``stsb-<split>``."""
    from st_contrast.evaluation import LocalSTSTask, read_sts_file

    data = read_sts_file(_shared(STSB / f"{split}.tsv.gz"))
    first = slice(pairs)
    return LocalSTSTask(
        data.sentences1[first], data.sentences2[first], data.scores[first], name=f"stsb-{split}", split=split
    )


def stsb_spearman(
    model: SentenceTransformer,
    *,
    split: str = "dev",
    pairs: int | None = None,
    prompt: str | None = None,
    truncate_dim: int | None = None,
) -> float:
    """Cosine Spearman x100 on STS-B ``split`` (MTEB's score, through ``st_contrast.evaluation.evaluate_model``).

    ``prompt``: an instruction prepended to every sentence (``InstructionPooling`` leaves it out of the pooling);
    ``truncate_dim``: score the embeddings cut to their first dimensions (Matryoshka).
    """
    from st_contrast.evaluation import evaluate_model

    task = stsb_task(split, pairs)
    saved = model.prompts, model.default_prompt_name, model.truncate_dim
    try:
        if prompt is not None:  # MTEB encodes an STS task with the model's prompt named after the task type
            model.prompts = {**model.prompts, "STS": prompt}
        if truncate_dim is not None:
            model.truncate_dim = truncate_dim
        result = evaluate_model(model, [task], batch_size=64)
    finally:
        model.prompts, model.default_prompt_name, model.truncate_dim = saved
    return result[task.metadata.name]["main_score"] * 100
