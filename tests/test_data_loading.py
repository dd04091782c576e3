"""st_contrast.data loaders: every file format round-trips, columns/objectives/prefixes map, bad data is named."""

from __future__ import annotations

import csv
import gzip
import json
import re
from pathlib import Path

import datasets
import pytest

from st_contrast.data import DataError, DatasetSpec, build_training_data, load_dataset_spec, normalize_prefix

ROWS = {
    "query": ["what is a cat", "how tall is Everest", 'a "quoted" question', "NA"],
    "document": ["A cat is a small feline.", "Everest is 8849 m tall.", 'It has a stray " quote', "null"],
    "negative": ["Dogs bark.", "The Alps are in Europe.", "Something else", "none"],
}


@pytest.fixture()
def cache(tmp_path):
    return str(tmp_path / "hf_cache")


def _records() -> list[dict]:
    return [dict(zip(ROWS, values, strict=True)) for values in zip(*ROWS.values(), strict=True)]


def _write(path: Path, kind: str) -> Path:
    opener = gzip.open if path.name.endswith(".gz") else open
    if kind == "parquet":
        datasets.Dataset.from_dict(ROWS).to_parquet(str(path))
    elif kind == "jsonl":
        with opener(path, "wt", encoding="utf8") as handle:
            handle.writelines(json.dumps(record) + "\n" for record in _records())
    elif kind == "tsv":  # plain tab-separated lines, no quoting (how TSV corpora are written)
        with opener(path, "wt", encoding="utf8") as handle:
            handle.writelines("\t".join(row) + "\n" for row in [list(ROWS), *zip(*ROWS.values(), strict=True)])
    else:  # csv, written by the csv module (the reference writer)
        with opener(path, "wt", encoding="utf8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(ROWS)
            writer.writerows(zip(*ROWS.values(), strict=True))
    return path


@pytest.mark.parametrize(
    "name,kind",
    [
        ("data.parquet", "parquet"),
        ("data.jsonl", "jsonl"),
        ("data.jsonl.gz", "jsonl"),
        ("data.csv", "csv"),
        ("data.csv.gz", "csv"),
        ("data.tsv", "tsv"),
        ("data.tsv.gz", "tsv"),
    ],
)
def test_every_file_format_round_trips(tmp_path, cache, name, kind):
    path = _write(tmp_path / name, kind)
    dataset = load_dataset_spec(DatasetSpec(name="d", path=str(path)), cache_dir=cache)
    assert dataset.column_names == list(ROWS)
    assert {column: list(dataset[column]) for column in ROWS} == ROWS  # "NA", "null", quotes stay text


def test_glob_of_files_and_save_to_disk_dirs(tmp_path, cache):
    for part in range(2):
        with open(tmp_path / f"part-{part}.jsonl", "w") as handle:
            handle.writelines(json.dumps({"query": f"q{part}{i}", "document": f"d{part}{i}"}) + "\n" for i in range(3))
    spec = {"name": "g", "path": str(tmp_path / "part-*.jsonl"), "objective": "paired"}
    globbed = load_dataset_spec(spec, cache_dir=cache)
    assert list(globbed["anchor"]) == ["q00", "q01", "q02", "q10", "q11", "q12"]
    assert globbed.column_names == ["anchor", "positive"]

    reference = datasets.Dataset.from_dict(ROWS)
    reference.save_to_disk(str(tmp_path / "single"))
    datasets.DatasetDict({"train": reference, "dev": reference.select([0])}).save_to_disk(str(tmp_path / "dict"))
    single = load_dataset_spec({"name": "s", "path": str(tmp_path / "single")})
    assert single.to_dict() == reference.to_dict()
    dev = load_dataset_spec({"name": "s", "path": str(tmp_path / "dict"), "split": "dev"})
    assert dev.to_dict() == reference.select([0]).to_dict()
    with pytest.raises(DataError, match=r"splits \['dev', 'train'\], not 'test'"):
        load_dataset_spec({"name": "s", "path": str(tmp_path / "dict"), "split": "test"})


def test_folder_of_data_files_loads_like_the_hub_would(tmp_path, cache):
    folder = tmp_path / "hub_like"
    folder.mkdir()
    _write(folder / "train.jsonl", "jsonl")
    dataset = load_dataset_spec({"name": "h", "path": str(folder), "columns": ["document", "query"]}, cache_dir=cache)
    assert dataset.column_names == ["document", "query"]
    assert list(dataset["document"]) == ROWS["document"]


def test_shared_nli_triplets_load(shared_data, cache):
    path = shared_data / "nli" / "derived" / "triplets.tsv.gz"
    dataset = load_dataset_spec({"name": "nli", "path": str(path), "objective": "triplet"}, cache_dir=cache)
    with gzip.open(path, "rt", encoding="utf8") as handle:
        reference = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    assert len(dataset) == len(reference) == 6965
    assert dataset.column_names == ["anchor", "positive", "negative"]
    for i in (0, 1234, 6964):
        assert dataset[i] == {key: reference[i][key] for key in ("anchor", "positive", "negative")}


def test_columns_list_mapping_objectives_and_negatives(tmp_path, cache):
    records = [
        {"q": "q1", "d": "d1", "negs": ["n11", "n12", "n13"], "score": 0.5, "id": 1},
        {"q": "q2", "d": "d2", "negs": ["n21", "n22", "n23"], "score": 0.7, "id": 2},
    ]
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    load = lambda **kw: load_dataset_spec({"name": "r", "path": str(path), **kw}, cache_dir=cache)  # noqa: E731

    assert load(columns=["d", "q"]).to_dict() == {"d": ["d1", "d2"], "q": ["q1", "q2"]}
    assert load(columns={"q": "question", "d": "answer"}).column_names == ["question", "answer"]
    triplets = load(objective={"type": "triplet", "columns": ["q", "d", "negs"]})  # contrastors form
    assert triplets.column_names == ["anchor", "positive", "negative_1", "negative_2", "negative_3"]
    assert triplets[1] == {
        "anchor": "q2",
        "positive": "d2",
        "negative_1": "n21",
        "negative_2": "n22",
        "negative_3": "n23",
    }
    two = load(objective="triplet", columns=["q", "d", "negs"], num_negatives=1)
    assert two.to_dict() == {"anchor": ["q1", "q2"], "positive": ["d1", "d2"], "negative": ["n11", "n21"]}
    scored = load(columns=["q", "d"], label_column="score")
    assert scored.column_names == ["q", "d", "label"] and list(scored["label"]) == [0.5, 0.7]
    assert load(objective="paired", columns=["q", "d"], max_rows=1).to_dict() == {"anchor": ["q1"], "positive": ["d1"]}
    with pytest.raises(DataError, match="fewer than the 4 used"):
        load(objective="triplet", columns=["q", "d", "negs"], num_negatives=4)
    with pytest.raises(DataError, match="holds Value"):
        load(columns=["q", "id"])


def test_prefixes_follow_contrastors(tmp_path):
    assert normalize_prefix("search_query") == "search_query: "
    assert normalize_prefix("query:") == "query: "
    assert normalize_prefix("Represent this: ") == "Represent this: "
    spec = DatasetSpec(name="x", path="p", query_prefix="search_query", document_prefix="search_document")
    assert spec.prompts(["anchor", "positive", "negative"]) == {
        "anchor": "search_query: ",
        "positive": "search_document: ",
        "negative": "search_document: ",
    }
    # contrastors: documents default to the query prefix; "" turns the document prefix off
    assert DatasetSpec(name="x", path="p", query_prefix="clustering").prompts(["a", "b"]) == {
        "a": "clustering: ",
        "b": "clustering: ",
    }
    assert DatasetSpec(name="x", path="p", query_prefix="q", document_prefix="").prompts(["a", "b"]) == {"a": "q: "}
    config = {"name": "nq", "bucket": "nq/", "query_only": True, "objective": {"type": "paired", "columns": ["a", "b"]}}
    assert DatasetSpec.from_dict(config).columns == ["a", "b"]
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['colums'\]"):
        DatasetSpec.from_dict({"name": "x", "path": "p", "colums": ["a"]})


def test_build_training_data_single_and_mixture(tmp_path, cache):
    path = _write(tmp_path / "a.jsonl", "jsonl")
    first = {"name": "first", "path": str(path), "objective": "triplet", "columns": list(ROWS), "query_prefix": "q"}
    single = build_training_data(first, cache_dir=cache)
    assert isinstance(single.dataset, datasets.Dataset) and single.num_samples == 4
    assert single.prompts == {"anchor": "q: ", "positive": "q: ", "negative": "q: "}

    second = {"name": "second", "path": str(path), "columns": ["query", "document"], "max_rows": 3}
    mixture = build_training_data([first, second], add_sample_index=True, cache_dir=cache)
    assert list(mixture.dataset) == ["first", "second"]
    assert mixture.prompts == {"first": {"anchor": "q: ", "positive": "q: ", "negative": "q: "}}
    assert mixture.num_samples == 7
    indices = list(mixture.dataset["first"]["label"]) + list(mixture.dataset["second"]["label"])
    assert indices == list(range(7))  # unique over the mixture
    assert mixture.weights is None
    weighted = build_training_data([{**first, "weight": 1}, {**second, "weight": 3}], cache_dir=cache)
    assert weighted.weights == [1.0, 3.0]
    with pytest.raises(ValueError, match="on every dataset of the mixture or on none"):
        build_training_data([{**first, "weight": 1}, second], cache_dir=cache)
    with pytest.raises(ValueError, match="unique"):
        build_training_data([first, first], cache_dir=cache)
    with pytest.raises(DataError, match="already has the label column"):
        build_training_data({**second, "label_column": "negative"}, add_sample_index=True, cache_dir=cache)


PAIR = '{"query": "a", "document": "b"}\n'
BAD_FILES = {
    "bad.jsonl": (PAIR + '{"query": "c", "document": \n', r"bad\.jsonl, line 2: malformed JSON"),
    "empty.jsonl": (
        PAIR + '{"query": "c", "document": "  "}\n',
        r"empty\.jsonl, row 1 \(data line 2\): column 'document' is empty",
    ),
    "null.jsonl": (
        PAIR + '{"query": "c", "document": null}\n',
        r"null\.jsonl, row 1 \(data line 2\): column 'document' is missing \(null\)",
    ),
    "empty.tsv": (
        "query\tdocument\na\tb\nc\td\ne\t\n",
        r"empty\.tsv, row 2 \(data line 3\): column 'document' is empty",
    ),
    "missing.csv": ("query,text\na,b\n", r"column\(s\) \['document'\] not found; the data has \['query', 'text'\]"),
    "ragged.csv": (
        "query,document\na,b\nc,d,e,f\n",
        r"ragged\.csv, line 3: 4 fields, but the header has 2 \(\['query', 'document'\]\)",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_data_names_file_and_row(tmp_path, cache, name):
    content, message = BAD_FILES[name]
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=message):
        load_dataset_spec(
            {"name": "bad", "path": str(tmp_path / name), "columns": ["query", "document"]}, cache_dir=cache
        )


def test_row_numbers_count_across_files_of_a_glob(tmp_path, cache):
    (tmp_path / "a.jsonl").write_text('{"q": "a"}\n{"q": "b"}\n')
    (tmp_path / "b.jsonl").write_text('{"q": "c"}\n{"q": ""}\n')
    with pytest.raises(DataError, match=r"b\.jsonl, row 1 \(data line 2\): column 'q' is empty"):
        load_dataset_spec({"name": "g", "path": str(tmp_path / "*.jsonl")}, cache_dir=cache)


def test_missing_paths_and_offline_hub_ids_get_clear_errors(tmp_path, cache, monkeypatch):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset_spec({"name": "m", "path": str(tmp_path / "nope.jsonl")})
    with pytest.raises(DataError, match="no file matches"):
        load_dataset_spec({"name": "m", "path": str(tmp_path / "*.parquet")})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="no local file or folder, and loading it as a Hugging Face hub dataset failed"):
        load_dataset_spec({"name": "m", "path": "someone/some-dataset-that-is-not-here"}, cache_dir=cache)


def test_dataset_fields_of_a_wrong_type_are_refused_when_the_spec_is_made():
    """Not later in the loader, nor read another way (``max_rows: true`` as 1 row, a column name split in letters)."""
    import numpy as np

    cases = {
        "max_rows": (True, "max_rows must be an integer or null, got True (bool)"),
        "columns": ("anchor", "columns must be a list of column names, a {source: target} mapping or null"),
        "query_prefix": (5, "query_prefix must be a string or null, got 5 (int)"),
        "image_columns": ([0], "image_columns must be a column name or a list of them"),
        "storage_options": ([], "storage_options must be a mapping"),
    }
    for field, (value, message) in cases.items():
        with pytest.raises(ValueError, match=re.escape(f"Dataset 'x': {message}")):
            DatasetSpec(name="x", path="p", **{field: value})
    spec = DatasetSpec(name="x", path=["p", "q"], columns=("a", "b"), max_rows=np.int64(5), weight=2, image_columns="a")
    assert spec.max_rows == 5 and spec.image_columns == ["a"]
