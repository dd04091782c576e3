"""``st-contrast describe`` on the directory of a real monitored run."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from datasets import Dataset
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainingArguments
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

from st_contrast import ContrastiveTrainer
from st_contrast.callbacks import load_run, read_jsonl
from st_contrast.cli.describe import _rolling
from st_contrast.cli.main import main

PLOTS = ("loss.png", "lr_vs_loss.png", "step_time.png", "throughput.png", "geometry.png", "spectrum.png")


def texts(n: int, offset: int) -> list[str]:
    return [f"text {i} " + "and some more " * (i % 4) for i in range(offset, offset + n)]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_model_factory):
    output = tmp_path_factory.mktemp("monitored_run")
    backbone = Transformer(tiny_model_factory("bert"), max_seq_length=32)
    model = SentenceTransformer(modules=[backbone, Pooling(backbone.get_embedding_dimension(), "mean")], device="cpu")
    args = SentenceTransformerTrainingArguments(
        str(output),
        max_steps=8,
        per_device_train_batch_size=4,
        logging_steps=1,
        eval_strategy="steps",
        eval_steps=4,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
    )
    trainer = ContrastiveTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_dict({"anchor": texts(32, 0), "positive": texts(32, 100)}),
        loss=MultipleNegativesRankingLoss(model),
        monitoring={
            "probe": list(zip(texts(6, 500), texts(6, 600), strict=True)),
            "spectrum_every": 2,
            "peak_flops": 1e10,  # a nominal CPU peak, so the MFU panel is drawn
        },
    )
    trainer.train()
    return output


def test_describe_writes_plots_and_summary(run_dir, capsys):
    assert main(["describe", str(run_dir)]) == 0
    import matplotlib.image

    for name in PLOTS:
        image = matplotlib.image.imread(run_dir / "plots" / name)
        assert image.shape[0] > 300 and image.shape[1] > 600, name
        assert image[..., :3].std() > 0.05, f"{name} is blank"
    summary = (run_dir / "plots" / "summary.txt").read_text()
    assert summary.strip() in capsys.readouterr().out
    log = read_jsonl(run_dir / "log.jsonl")
    losses = [record["loss"] for record in log]
    assert f"first {losses[0]:.4g}, last {losses[-1]:.4g}, min {min(losses):.4g}" in summary
    assert f"Seen: {log[-1]['tokens_seen']:,} tokens, {log[-1]['samples_seen']:,} samples" in summary
    assert "Geometry effective_rank" in summary and "Weight spectrum mean" in summary and "MFU: median" in summary


def test_run_logs_series(run_dir):
    run = load_run(run_dir)
    steps, values = run.series("loss")
    assert steps == list(range(1, 9)) and len(values) == 8
    assert set(run.geometry_keys()) >= {"anisotropy", "effective_rank", "alignment"}
    assert run.series("spectrum/mean")[0] == [2, 4, 6, 8]


def test_rolling_band_matches_numpy():
    values = [5.0, 1.0, 4.0, 2.0, 8.0, 3.0, 7.0]
    low, median, high = _rolling(values, 3)
    for i in range(len(values)):
        window = values[max(0, i - 2) : i + 1]
        assert low[i] == pytest.approx(np.percentile(window, 10))
        assert median[i] == pytest.approx(np.median(window))
        assert high[i] == pytest.approx(np.percentile(window, 90))


def test_missing_matplotlib_says_how_to_install(run_dir, tmp_path, monkeypatch, capsys):
    for name in [module for module in sys.modules if module == "matplotlib" or module.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    assert main(["describe", str(run_dir), "--out", str(tmp_path)]) == 1
    assert "pip install 'st-contrast[plot]'" in capsys.readouterr().err
    assert (tmp_path / "summary.txt").is_file()  # the text summary does not need matplotlib


def test_directory_without_logs(tmp_path, capsys):
    assert main(["describe", str(tmp_path)]) == 2
    assert "enable_monitoring" in capsys.readouterr().err
