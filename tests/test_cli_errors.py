"""Every bad input to ``st-contrast train``: exit 2, one line naming the key (or file and line), no traceback, and the
run directory left byte-for-byte as it was (or not created)."""

from __future__ import annotations

import gzip
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from st_contrast.cli import main


def snapshot(folder: Path) -> dict[str, str] | None:
    if not folder.exists():
        return None
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        for path in sorted(folder.rglob("*"))
    }


@pytest.fixture(scope="module")
def files(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("bad-inputs")
    rows = "anchor\tpositive\n" + "".join(f"a man number {i} runs\ta person {i} is running\n" for i in range(40))
    (root / "good.tsv").write_text(rows, encoding="utf8")
    (root / "nocolumn.tsv").write_text("anchor\tother\nA\tB\n", encoding="utf8")
    (root / "empty.tsv").write_text("", encoding="utf8")
    compressed = gzip.compress(rows.encode() * 200)
    (root / "truncated.tsv.gz").write_bytes(compressed[: len(compressed) // 2])
    (root / "bad.jsonl").write_text('{"anchor": "a", "positive": "b"}\n{"anchor": "c", "positive":\n', encoding="utf8")
    (root / "latin1.tsv").write_bytes(b"anchor\tpositive\nA\tB\ncaf\xe9\tcoffee\n")
    (root / "rowcolumn.jsonl").write_text('{"anchor": "a", "positive": "b"}\n{"anchor": "c"}\n', encoding="utf8")
    (root / "emptytext.tsv").write_text("anchor\tpositive\nA\tB\nC\t \n", encoding="utf8")
    (root / "ragged.tsv").write_text("anchor\tpositive\nA\tB\nC\tD\tE\n", encoding="utf8")
    (root / "ragged.csv").write_text('anchor,positive\nA,B\n"C",D,E\n', encoding="utf8")
    return root


@pytest.fixture(scope="module")
def deberta(tmp_path_factory, minilm_path):
    """An architecture that is refused packed (DeBERTa's relative attention)."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    path = tmp_path_factory.mktemp("deberta")
    config = AutoConfig.for_model(
        "deberta-v2", hidden_size=32, num_attention_heads=2, num_hidden_layers=1, intermediate_size=64
    )
    AutoModel.from_config(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(path)
    return str(path)


CASES = [
    # (id, --set overrides, expected text of the one-line error)
    ("loss typo", ["loss.name=InfoNCE"], "Unknown loss 'InfoNCE'"),
    ("learning rate text", ["training.learning_rate=fast"], "training.learning_rate must be a number, got 'fast'"),
    ("max steps text", ["training.max_steps=two"], "training.max_steps must be an integer, got 'two'"),
    ("max length text", ["model.max_seq_length=long"], "model.max_seq_length must be an integer"),
    ("max length zero", ["model.max_seq_length=0"], "model.max_seq_length must be positive, got 0"),
    ("negative steps", ["training.max_steps=-5"], "training.max_steps must be positive (or -1"),
    ("batch size zero", ["training.per_device_train_batch_size=0"], "per_device_train_batch_size must be at least 1"),
    (
        "misspelled argument",
        ["training.max_stepz=3"],
        "Unknown training argument 'max_stepz'. Did you mean 'max_steps'",
    ),
    ("missing file", ["data.datasets.0.path={root}/missing.tsv"], "missing.tsv' does not exist"),
    ("missing column", ["data.datasets.0.path={root}/nocolumn.tsv"], "needs columns"),
    ("empty file", ["data.datasets.0.path={root}/empty.tsv"], "empty.tsv: the file is empty"),
    (
        "truncated gzip",
        ["data.datasets.0.path={root}/truncated.tsv.gz"],
        "truncated.tsv.gz: the gzip stream is truncated",
    ),
    ("bad jsonl line", ["data.datasets.0.path={root}/bad.jsonl"], "bad.jsonl, line 2: malformed JSON"),
    ("not utf-8", ["data.datasets.0.path={root}/latin1.tsv"], "latin1.tsv, line 3: byte 0xe9 at column 4 is not UTF-8"),
    (
        "missing column in a row",
        ["data.datasets.0.path={root}/rowcolumn.jsonl"],
        "rowcolumn.jsonl, row 1 (data line 2): column 'positive' is missing (null)",
    ),
    ("empty text", ["data.datasets.0.path={root}/emptytext.tsv"], "emptytext.tsv, row 1 (data line 2): column 'posit"),
    ("bad tsv line", ["data.datasets.0.path={root}/ragged.tsv"], "ragged.tsv, line 3: 3 fields, but the header has 2"),
    ("bad csv line", ["data.datasets.0.path={root}/ragged.csv"], "ragged.csv, line 3: 3 fields, but the header has 2"),
    ("bad-row mode", ["data.datasets.0.on_bad_rows=ignore"], "on_bad_rows must be one of ['raise', 'skip']"),
    ("varlen on cpu", ["model.attention_backend=varlen"], "model.attention_backend: 'varlen' cannot run here"),
    (
        "refused packed",
        ["model.name_or_path={deberta}"],
        "model_type 'deberta-v2' cannot run packed: DeBERTa's disentangled relative attention",
    ),
    ("eval file", ["evaluation.tasks=[sts:{root}/missing-sts.tsv]"], "evaluation.tasks: STS file not found"),
    ("unknown section", ["optimiser.lr=1"], "Unknown configuration section(s) ['optimiser']"),
]


@pytest.mark.parametrize("where", ["existing run", "new directory"])
@pytest.mark.parametrize(("overrides", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_is_one_line_and_changes_nothing(
    overrides, expected, where, files, deberta, tiny_model_factory, tmp_path, capsys
):
    run_dir = tmp_path / "run"
    if where == "existing run":  # a rerun of an earlier run must not overwrite its files
        run_dir.mkdir()
        (run_dir / "config.yaml").write_text("earlier: run\n", encoding="utf8")
        (run_dir / "metrics.json").write_text('{"before": {}}\n', encoding="utf8")
    config = {
        "output_dir": str(run_dir),
        "model": {"name_or_path": tiny_model_factory("bert"), "max_seq_length": 32},
        "loss": {"name": "InfoNCELoss"},
        "data": {"datasets": [{"name": "pairs", "path": str(files / "good.tsv"), "objective": "paired"}]},
        "training": {"max_steps": 2, "per_device_train_batch_size": 4, "use_cpu": True},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf8")
    before = snapshot(run_dir)
    capsys.readouterr()  # what building the tiny model printed
    argv = ["train", str(path)]
    for override in overrides:
        argv += ["--set", override.format(root=files, deberta=deberta)]

    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("st-contrast train: error: "), err
    assert expected in err[0], err[0]
    assert "Traceback" not in err[0]
    assert snapshot(run_dir) == before


def test_debug_shows_the_traceback(tiny_model_factory, tmp_path):
    config = {
        "output_dir": str(tmp_path / "run"),
        "model": {"name_or_path": tiny_model_factory("bert")},
        "loss": {"name": "NoSuchLoss"},
        "data": {"datasets": [{"name": "d", "path": "x.tsv"}]},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf8")
    from st_contrast.training.validation import ConfigError

    with pytest.raises(ConfigError, match="NoSuchLoss"):
        main(["--debug", "train", str(path)])


_WITHOUT_DATASETS = """
import sys


class NoDatasets:  # a machine whose stack lacks `datasets` (the GPU machine, with st_contrast on PYTHONPATH)
    def find_spec(self, name, path=None, target=None):
        if name == "datasets" or name.startswith("datasets."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


sys.meta_path.insert(0, NoDatasets())
from st_contrast.cli import main

sys.exit(main(sys.argv[1:]))
"""


def test_a_missing_dependency_is_one_line_naming_it(tmp_path):
    """Not a traceback in which the error handler itself fails to import st_contrast.data."""
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "run")}), encoding="utf8")
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_DATASETS, "train", str(config)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 2, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("st-contrast train: error: No module named 'datasets'"), lines
    assert not (tmp_path / "run").exists()
