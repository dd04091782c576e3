"""Shared data for the evaluation tests: STS-B rows read independently, and a toy BEIR directory."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

STSB_TEST = ("sts", "stsbenchmark", "test.tsv.gz")
DBPEDIA = ("retrieval", "dbpedia_entity_subset")

TOY_CORPUS = {
    "photo": ("Photosynthesis", "Plants use sunlight, water and carbon dioxide to make glucose and oxygen."),
    "chloro": ("Chlorophyll", "The green pigment in leaves absorbs light energy for the plant."),
    "roots": ("", "Roots anchor a plant in the soil and take up water and minerals."),
    "leonardo": ("Leonardo da Vinci", "An Italian polymath of the High Renaissance: painter, engineer and scientist."),
    "mona": ("Mona Lisa", "The Mona Lisa is a portrait painted by Leonardo da Vinci in the sixteenth century."),
    "louvre": ("Louvre", "The Louvre museum in Paris houses the Mona Lisa and thousands of other works."),
    "paris": ("Paris", "Paris is the capital and largest city of France."),
    "lyon": ("Lyon", "Lyon is a French city known for its cuisine and its silk industry."),
    "soccer": ("Football", "Association football is a team sport played with a spherical ball between two teams."),
    "python": ("Python", "Python is a programming language that emphasises code readability."),
    "volcano": ("Volcano", "A volcano is a rupture in the crust of a planet through which lava escapes."),
    "bread": ("", "Bread is baked from a dough of flour and water, usually leavened with yeast."),
    "moon": ("Moon", "The Moon is the only natural satellite of the Earth."),
}
TOY_QUERIES = {
    "q-plants": "How do plants make food from sunlight?",
    "q-painter": "Who painted the Mona Lisa?",
    "q-capital": "What is the capital city of France?",
    "q-unjudged": "How are volcanoes formed?",
}
TOY_QRELS = [  # grades chosen against the obvious order, so that rankings are imperfect and gains matter
    ("q-plants", "photo", 1),
    ("q-plants", "chloro", 2),
    ("q-plants", "roots", 0),
    ("q-painter", "mona", 1),
    ("q-painter", "louvre", 2),
    ("q-painter", "leonardo", 2),
    ("q-painter", "paris", 0),
    ("q-capital", "paris", 2),
    ("q-capital", "lyon", 0),
    ("q-capital", "moon", 1),
]


def stsb_rows(shared_data: Path, limit: int | None = None) -> list[tuple[str, str, float]]:
    """(sentence1, sentence2, score) of STS-B test, parsed as its README says (columns 5, 6, 4)."""
    with gzip.open(shared_data.joinpath(*STSB_TEST), "rt", encoding="utf8") as handle:
        rows = [(row[5], row[6], float(row[4])) for row in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)]
    return rows[:limit] if limit else rows


def write_headed_sts(path: Path, rows: list[tuple[str, str, float]], delimiter: str = "\t") -> Path:
    """A headed STS file (extra leading column, columns out of order), gzipped when ``path`` ends in .gz."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf8", newline="") as handle:
        if delimiter == "\t":  # as STS files are: no quoting at all, stray quotes are text
            handle.write("id\tscore\tsentence1\tsentence2\n")
            handle.writelines(f"{i}\t{score}\t{a}\t{b}\n" for i, (a, b, score) in enumerate(rows))
        else:
            writer = csv.writer(handle, delimiter=delimiter)
            writer.writerow(["id", "score", "sentence1", "sentence2"])
            writer.writerows([i, score, a, b] for i, (a, b, score) in enumerate(rows))
    return path


def write_toy_beir(
    directory: Path, compress: bool = False, qrels=TOY_QRELS, corpus=TOY_CORPUS, queries=TOY_QUERIES
) -> Path:
    """The toy corpus (or ``corpus`` / ``queries`` / ``qrels`` given alike) as a BEIR directory (corpus/queries jsonl,
    qrels/test.tsv), optionally gzipped."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "qrels").mkdir(exist_ok=True)

    def write(path: Path, text: str) -> None:
        if compress:
            with gzip.open(path.with_name(path.name + ".gz"), "wt", encoding="utf8") as handle:
                handle.write(text)
        else:
            path.write_text(text, encoding="utf8")

    docs = [{"_id": doc_id, "title": title, "text": text} for doc_id, (title, text) in corpus.items()]
    write(directory / "corpus.jsonl", "".join(json.dumps(doc) + "\n" for doc in docs))
    rows = [{"_id": query_id, "text": text} for query_id, text in queries.items()]
    write(directory / "queries.jsonl", "".join(json.dumps(row) + "\n" for row in rows))
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{s}" for q, d, s in qrels]
    write(directory / "qrels" / "test.tsv", "\n".join(lines) + "\n")
    return directory
