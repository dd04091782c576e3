"""STS (semantic textual similarity) tasks over local files, evaluated by MTEB's ``AbsTaskSTS``."""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict
from mteb.abstasks.sts import AbsTaskSTS

from st_contrast.evaluation.errors import DataFormatError
from st_contrast.evaluation.files import open_text
from st_contrast.evaluation.metadata import local_task_metadata
from st_contrast.evaluation.rng import preserved_rng_state

__all__ = ["LocalSTSTask", "STSPairs", "read_sts_file", "sts_task_from_file"]

HEADER_COLUMNS = ("sentence1", "sentence2", "score")
STSB_COLUMNS = {"score": 4, "sentence1": 5, "sentence2": 6}
"""Column positions in the original STS benchmark files (genre, file, year, id, score, sentence1, sentence2, ...)."""

_LAYOUT_HELP = (
    "an STS file needs either a header row naming the columns sentence1, sentence2 and score (tab- or "
    "comma-separated), or the original STS benchmark layout without a header (tab-separated: genre, file, "
    "year, id, score, sentence1, sentence2)"
)


@dataclass(frozen=True)
class STSPairs:
    """Sentence pairs with gold similarity scores, as read from one file."""

    sentences1: list[str]
    sentences2: list[str]
    scores: list[float]

    def __len__(self) -> int:
        return len(self.scores)


def _parse_score(value: str, path: Path, line: int, min_score: float, max_score: float) -> float:
    try:
        score = float(value)
    except ValueError:
        raise DataFormatError(path, f"the score {value!r} is not a number; {_LAYOUT_HELP}", line) from None
    if not min_score <= score <= max_score:
        raise DataFormatError(
            path,
            f"the score {score} is outside [{min_score}, {max_score}]; pass min_score/max_score for another scale",
            line,
        )
    return score


def read_sts_file(path: str | Path, *, min_score: float = 0.0, max_score: float = 5.0) -> STSPairs:
    """Read sentence pairs and gold scores from an STS file (plain or gzip, recognised by content).

    Two layouts are accepted:

    - a header row naming ``sentence1``, ``sentence2`` and ``score`` (other columns are ignored);
    - the original STS benchmark files, without a header: ``genre, file, year, id, score, sentence1,
      sentence2`` and optional extra columns.

    The delimiter is a tab if the first line has one, else a comma. Tab-separated files are read with
    ``csv.QUOTE_NONE`` (the STS benchmark has stray ``"`` characters that are part of the text);
    comma-separated files with standard CSV quoting. Blank lines are skipped.

    Args:
        path: The file.
        min_score: Lowest valid gold score (scores outside ``[min_score, max_score]`` are an error).
        max_score: Highest valid gold score.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DataFormatError: The layout is not recognised, or a row lacks fields or has a non-numeric score;
            the message names the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"STS file not found: {path} (expected a .tsv/.csv file, optionally gzipped)")
    with open_text(path) as handle:
        first_line = handle.readline()
    tab = "\t" in first_line
    sentences1: list[str] = []
    sentences2: list[str] = []
    scores: list[float] = []
    with open_text(path) as handle:
        if tab:
            reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        else:
            reader = csv.reader(handle, delimiter=",")
        first = next(reader, None)
        while first is not None and not first:
            first = next(reader, None)
        if first is None:
            raise DataFormatError(path, f"the file is empty; {_LAYOUT_HELP}")
        names = [re.sub(r"\s+", "", field).lower() for field in first]
        if all(column in names for column in HEADER_COLUMNS):
            columns = {column: names.index(column) for column in HEADER_COLUMNS}
            rows: Any = reader
        elif tab and len(first) >= 7 and _is_number(first[STSB_COLUMNS["score"]]):
            columns = STSB_COLUMNS
            rows = _chain_first(first, reader)
        else:
            found = ", ".join(repr(field) for field in first[:8])
            raise DataFormatError(
                path, f"cannot tell the columns from the first row ({len(first)} fields: {found}); {_LAYOUT_HELP}", 1
            )
        needed = max(columns.values()) + 1
        for row in rows:
            if not row:
                continue
            if len(row) < needed:
                raise DataFormatError(
                    path,
                    f"expected at least {needed} {'tab' if tab else 'comma'}-separated fields, found {len(row)}",
                    reader.line_num,
                )
            scores.append(_parse_score(row[columns["score"]], path, reader.line_num, min_score, max_score))
            sentences1.append(row[columns["sentence1"]])
            sentences2.append(row[columns["sentence2"]])
    if not scores:
        raise DataFormatError(path, "the file has a header but no sentence pairs")
    return STSPairs(sentences1, sentences2, scores)


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _chain_first(first: list[str], reader: Any) -> Any:
    yield first
    yield from reader


class LocalSTSTask(AbsTaskSTS):
    """An MTEB STS task over sentence pairs held in memory (typically read from a local file).

    MTEB's own ``AbsTaskSTS`` evaluates it: both sentences are encoded, and Pearson / Spearman correlations of
    the gold scores with cosine (main score: ``cosine_spearman``), Euclidean, Manhattan and the model's own
    similarity are reported, exactly as for a hub task such as ``STSBenchmark``.

    Args:
        sentences1: First sentence of each pair.
        sentences2: Second sentence of each pair.
        scores: Gold similarity of each pair.
        name: Task name (results key and MTEB JSON file name).
        split: Split name the results are reported under.
        min_score: Lowest possible gold score (MTEB normalises scores with it; correlations do not change).
        max_score: Highest possible gold score.
        source: Where the pairs come from, recorded in the metadata.
        languages: Language-script codes (default ``["eng-Latn"]``).
        prompt: Optional instruction prompt for instruction-tuned models.

    Example:
        ::

            import mteb
            from st_contrast.evaluation import LocalSTSTask

            task = LocalSTSTask(["A man plays."], ["Someone makes music."], [4.2], name="tiny-sts")
            results = mteb.evaluate(model, [task], cache=None)
    """

    def __init__(
        self,
        sentences1: Sequence[str],
        sentences2: Sequence[str],
        scores: Sequence[float],
        *,
        name: str,
        split: str = "test",
        min_score: float = 0.0,
        max_score: float = 5.0,
        source: str | Path = "memory",
        languages: Sequence[str] = ("eng-Latn",),
        prompt: str | dict[str, str] | None = None,
        seed: int = 42,
    ) -> None:
        if not len(sentences1) == len(sentences2) == len(scores):
            raise ValueError(
                f"sentences1, sentences2 and scores must have the same length, got "
                f"{len(sentences1)}, {len(sentences2)} and {len(scores)}"
            )
        if len(scores) < 2:
            raise ValueError(f"an STS task needs at least 2 pairs to compute correlations, got {len(scores)}")
        self.metadata = local_task_metadata(
            name=name,
            task_type="STS",
            main_score="cosine_spearman",
            source=source,
            split=split,
            languages=languages,
            prompt=prompt,
        )
        self.min_score = min_score
        self.max_score = max_score
        self._columns = {
            "sentence1": list(sentences1),
            "sentence2": list(sentences2),
            "score": [float(score) for score in scores],
        }
        with preserved_rng_state():  # MTEB's constructor reseeds random, NumPy and torch globally
            super().__init__(seed=seed)

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        """Build the in-memory dataset (no download, no cache files)."""
        if self.data_loaded:
            return
        self.dataset = DatasetDict({self.metadata.eval_splits[0]: Dataset.from_dict(self._columns)})
        self.data_loaded = True

    def unload_data(self) -> None:
        """Drop the dataset; the pairs stay, so ``load_data`` can rebuild it (the metadata is kept)."""
        self.dataset = None
        self.data_loaded = False


def sts_task_from_file(
    path: str | Path,
    name: str | None = None,
    split: str = "test",
    *,
    min_score: float = 0.0,
    max_score: float = 5.0,
    languages: Sequence[str] = ("eng-Latn",),
    prompt: str | dict[str, str] | None = None,
) -> LocalSTSTask:
    """An MTEB STS task from a local file (see :func:`read_sts_file` for the accepted layouts).

    Args:
        path: The STS file (``.tsv``/``.csv``, optionally gzipped).
        name: Task name; default ``<parent directory>-<file stem>``, e.g. ``stsbenchmark-test``.
        split: Split name the results are reported under.
        min_score: Lowest valid gold score.
        max_score: Highest valid gold score.
        languages: Language-script codes of the data.
        prompt: Optional instruction prompt for instruction-tuned models.

    Example:
        ::

            from st_contrast.evaluation import evaluate_model, sts_task_from_file

            task = sts_task_from_file("../shared/data/sts/stsbenchmark/test.tsv.gz")
            print(evaluate_model(model, [task])["stsbenchmark-test"]["main_score"])  # 0.8203 for all-MiniLM-L6-v2
    """
    path = Path(path)
    pairs = read_sts_file(path, min_score=min_score, max_score=max_score)
    return LocalSTSTask(
        pairs.sentences1,
        pairs.sentences2,
        pairs.scores,
        name=name or _default_task_name(path),
        split=split,
        min_score=min_score,
        max_score=max_score,
        source=path.resolve(),
        languages=languages,
        prompt=prompt,
    )


def _default_task_name(path: Path) -> str:
    """``<parent directory>-<file name without .gz/.tsv/.csv/.txt suffixes>``."""
    stem = path.name
    for suffix in (".gz", ".tsv", ".csv", ".txt"):
        stem = stem.removesuffix(suffix)
    parent = path.resolve().parent.name
    return f"{parent}-{stem}" if parent else stem
