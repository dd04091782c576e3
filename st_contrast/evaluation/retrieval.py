"""Retrieval tasks over local BEIR-format directories, evaluated by MTEB's ``AbsTaskRetrieval``."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from st_contrast.evaluation.errors import DataFormatError
from st_contrast.evaluation.files import find_data_file, open_text
from st_contrast.evaluation.in_memory_retrieval import InMemoryRetrievalTask
from st_contrast.evaluation.metadata import local_task_metadata
from st_contrast.evaluation.rng import preserved_rng_state

__all__ = ["BEIRData", "LocalRetrievalTask", "read_beir_dir", "retrieval_task_from_beir"]

logger = logging.getLogger(__name__)

QRELS_COLUMNS = ("query-id", "corpus-id", "score")


@dataclass
class BEIRData:
    """One split of a BEIR dataset: corpus, the queries that have judgements, and the judgements.

    ``corpus`` maps document id to ``{"title": ..., "text": ...}`` (title ``""`` when absent), ``queries`` maps
    query id to its text, ``qrels`` maps query id to ``{document id: graded relevance}``; ``dropped_queries``
    counts the queries of ``queries.jsonl`` without any judgement in this split (left out, as MTEB does).
    """

    corpus: dict[str, dict[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    dropped_queries: int = 0
    source: Path | None = field(default=None, compare=False)


def _read_jsonl(path: Path, kind: str, with_title: bool) -> dict[str, Any]:
    """``{id: text}`` (queries) or ``{id: {"title", "text"}}`` (corpus) from a BEIR jsonl file."""
    records: dict[str, Any] = {}
    with open_text(path) as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataFormatError(path, f"not valid JSON ({error.msg})", line_number) from None
            if not isinstance(record, dict):
                raise DataFormatError(
                    path, f"each line must be a JSON object, got {type(record).__name__}", line_number
                )
            key = "_id" if "_id" in record else "id"
            if key not in record or not isinstance(record.get("text"), str):
                raise DataFormatError(
                    path,
                    f"a BEIR {kind} line needs an '_id' and a string 'text' field, got keys {sorted(record)}",
                    line_number,
                )
            record_id = str(record[key])
            if record_id in records:
                raise DataFormatError(path, f"the {kind} id {record_id!r} appears twice", line_number)
            if with_title:
                title = record.get("title") or ""
                if not isinstance(title, str):
                    raise DataFormatError(path, f"'title' must be a string, got {type(title).__name__}", line_number)
                records[record_id] = {"title": title, "text": record["text"]}
            else:
                records[record_id] = record["text"]
    if not records:
        raise DataFormatError(path, f"no {kind} entries")
    return records


def _read_qrels(
    path: Path, corpus: Mapping[str, Any], queries: Mapping[str, str], queries_path: Path, corpus_path: Path
):
    qrels: dict[str, dict[str, int]] = {}
    with open_text(path) as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        names = [name.strip().lower() for name in header or []]
        if not all(column in names for column in QRELS_COLUMNS):
            raise DataFormatError(
                path,
                f"the first line must be the header 'query-id<TAB>corpus-id<TAB>score' (BEIR qrels), got {header!r}",
                1,
            )
        position = {column: names.index(column) for column in QRELS_COLUMNS}
        needed = max(position.values()) + 1
        for row in reader:
            if not row:
                continue
            line = reader.line_num
            if len(row) < needed:
                raise DataFormatError(path, f"expected {needed} tab-separated fields, found {len(row)}", line)
            query_id, doc_id, score = (row[position[column]] for column in QRELS_COLUMNS)
            if query_id not in queries:
                raise DataFormatError(path, f"query-id {query_id!r} is not in {queries_path.name}", line)
            if doc_id not in corpus:
                raise DataFormatError(
                    path,
                    f"corpus-id {doc_id!r} is not in {corpus_path.name}; every judged document must be in the corpus",
                    line,
                )
            try:
                relevance = int(score)
            except ValueError:
                raise DataFormatError(path, f"the score {score!r} is not an integer relevance grade", line) from None
            judged = qrels.setdefault(query_id, {})
            if doc_id in judged:
                raise DataFormatError(path, f"the pair ({query_id!r}, {doc_id!r}) is judged twice", line)
            judged[doc_id] = relevance
    if not qrels:
        raise DataFormatError(path, "no judgements after the header")
    return qrels


def read_beir_dir(directory: str | Path, split: str = "test") -> BEIRData:
    """Read one split of a BEIR-format directory, checking that every judgement points at known ids.

    Layout (each file may be gzipped, with or without a ``.gz`` suffix)::

        DIR/corpus.jsonl     {"_id": ..., "title": ..., "text": ...} per line (title optional)
        DIR/queries.jsonl    {"_id": ..., "text": ...} per line
        DIR/qrels/SPLIT.tsv  header "query-id  corpus-id  score", then one graded judgement per line

    Queries without a judgement in ``SPLIT`` are dropped (MTEB's hub loader does the same).

    Raises:
        FileNotFoundError: The directory or one of its files is missing (the message lists what was looked for).
        DataFormatError: A malformed line, a duplicate id, or a judgement naming an unknown query or document;
            the message names the file and line.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"BEIR directory not found: {directory}")
    corpus_path = find_data_file(directory, "corpus", (".jsonl",))
    queries_path = find_data_file(directory, "queries", (".jsonl",))
    qrels_path = find_data_file(directory / "qrels", split, (".tsv",))
    for found, expected in (
        (corpus_path, "corpus.jsonl[.gz]"),
        (queries_path, "queries.jsonl[.gz]"),
        (qrels_path, f"qrels/{split}.tsv[.gz]"),
    ):
        if found is None:
            hint = ""
            if expected.startswith("qrels") and (directory / "qrels").is_dir():
                splits = sorted(path.name.split(".")[0] for path in (directory / "qrels").iterdir())
                hint = f"; qrels splits present: {splits} (pass split=...)"
            raise FileNotFoundError(f"{directory} is not a BEIR directory: {expected} is missing{hint}")
    corpus = _read_jsonl(corpus_path, "corpus", with_title=True)
    queries = _read_jsonl(queries_path, "query", with_title=False)
    qrels = _read_qrels(qrels_path, corpus, queries, queries_path, corpus_path)
    judged = {query_id: text for query_id, text in queries.items() if query_id in qrels}
    dropped = len(queries) - len(judged)
    if dropped:
        logger.info(
            "%s: %d of %d queries have no judgement in %s and are left out", directory, dropped, len(queries), split
        )
    return BEIRData(corpus=corpus, queries=judged, qrels=qrels, dropped_queries=dropped, source=directory)


class LocalRetrievalTask(InMemoryRetrievalTask):
    """An MTEB retrieval task over a corpus, queries and graded judgements held in memory.

    MTEB's own ``AbsTaskRetrieval`` evaluates it, exactly as a hub task: documents are encoded as
    ``title + " " + text`` (stripped; the text alone when the title is empty), queries as their text, the corpus
    is searched exhaustively by the model's similarity, and nDCG/MAP/recall/precision/MRR at
    k in (1, 3, 5, 10, 20, 100, 1000) are computed with ``pytrec_eval`` (main score: ``ndcg_at_10``).

    Args:
        corpus: ``{doc_id: {"title": str, "text": str}}`` or ``{doc_id: text}``.
        queries: ``{query_id: text}``; queries without judgements are ignored.
        qrels: ``{query_id: {doc_id: graded relevance}}``.
        name: Task name (results key and MTEB JSON file name).
        split: Split name the results are reported under.
        source: Where the data comes from, recorded in the metadata.
        languages: Language-script codes (default ``["eng-Latn"]``).
        prompt: Optional instruction prompt(s) for instruction-tuned models, e.g. ``{"query": "Given a query, ..."}``.
    """

    def __init__(
        self,
        corpus: Mapping[str, Mapping[str, str] | str],
        queries: Mapping[str, str],
        qrels: Mapping[str, Mapping[str, int]],
        *,
        name: str,
        split: str = "test",
        source: str | Path = "memory",
        languages: Sequence[str] = ("eng-Latn",),
        prompt: str | dict[str, str] | None = None,
        seed: int = 42,
    ) -> None:
        self.metadata = local_task_metadata(
            name=name,
            task_type="Retrieval",
            main_score="ndcg_at_10",
            source=source,
            split=split,
            languages=languages,
            prompt=prompt,
        )
        documents = {
            str(doc_id): doc if isinstance(doc, Mapping) else {"title": "", "text": doc}
            for doc_id, doc in corpus.items()
        }
        judged = {str(query_id): dict(judgements) for query_id, judgements in qrels.items() if judgements}
        unknown_queries = sorted(set(judged) - set(map(str, queries)))
        unknown_docs = sorted({doc_id for judgements in judged.values() for doc_id in judgements} - set(documents))
        if unknown_queries or unknown_docs:
            raise ValueError(
                f"qrels name {len(unknown_queries)} unknown query ids (e.g. {unknown_queries[:3]}) and "
                f"{len(unknown_docs)} unknown document ids (e.g. {unknown_docs[:3]}); every judged id must be in "
                "queries / corpus"
            )
        self._corpus = {
            "id": list(documents),
            "title": [doc.get("title") or "" for doc in documents.values()],
            "text": [doc["text"] for doc in documents.values()],
        }
        kept = [(str(query_id), text) for query_id, text in queries.items() if str(query_id) in judged]
        self._queries = {"id": [query_id for query_id, _ in kept], "text": [text for _, text in kept]}
        self._qrels = judged
        with preserved_rng_state():  # MTEB's constructor reseeds random, NumPy and torch globally
            super().__init__(seed=seed)


def retrieval_task_from_beir(
    directory: str | Path,
    name: str | None = None,
    split: str = "test",
    *,
    languages: Sequence[str] = ("eng-Latn",),
    prompt: str | dict[str, str] | None = None,
) -> LocalRetrievalTask:
    """An MTEB retrieval task from a local BEIR-format directory (see :func:`read_beir_dir`).

    Args:
        directory: The BEIR directory (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``, optionally gzipped).
        name: Task name; default the directory name.
        split: Which ``qrels/<split>.tsv`` to evaluate.
        languages: Language-script codes of the data.
        prompt: Optional instruction prompt(s) for instruction-tuned models.

    Example:
        ::

            from st_contrast.evaluation import evaluate_model, retrieval_task_from_beir

            task = retrieval_task_from_beir("../shared/data/retrieval/dbpedia_entity_subset")
            results = evaluate_model(model, [task])
            print(results["dbpedia_entity_subset"]["main_score"])  # nDCG@10 0.5114 for all-MiniLM-L6-v2
    """
    directory = Path(directory)
    data = read_beir_dir(directory, split)
    return LocalRetrievalTask(
        data.corpus,
        data.queries,
        data.qrels,
        name=name or directory.resolve().name,
        split=split,
        source=directory.resolve(),
        languages=languages,
        prompt=prompt,
    )
