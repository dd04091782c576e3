"""Zero-shot image classification and image-text retrieval tasks against a hand computation from the embeddings."""

from __future__ import annotations

import json

import numpy as np
import pytest
from image_text_helpers import random_images, tiny_two_tower

from st_contrast.data import write_tar_shards
from st_contrast.evaluation import DataFormatError, TaskSpecError, evaluate_model, resolve_task

CLASSES = ["cat", "dog", "bird"]


@pytest.fixture(scope="module")
def model(tiny_model_factory):
    return tiny_two_tower(tiny_model_factory("bert"), seed=5)


@pytest.fixture
def image_file(tmp_path):
    images = random_images(12, seed=7)
    labels = [CLASSES[number % 3] for number in range(12)]
    captions = [f"a photo number {number // 2}" for number in range(12)]  # each caption names two images
    (tmp_path / "pics").mkdir()
    rows = []
    for number, image in enumerate(images):
        image.save(tmp_path / "pics" / f"{number}.png")
        rows.append({"image": f"pics/{number}.png", "label": labels[number], "caption": captions[number]})
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return tmp_path / "test.jsonl", images, labels, captions


def test_zero_shot_accuracy_equals_the_hand_computed_one(model, image_file):
    path, images, labels, _ = image_file
    spec = {"type": "zeroshot", "path": str(path), "template": "a photo of a {}", "name": "pets"}
    result = evaluate_model(model, [spec])["pets"]
    prompts = model.encode([f"a photo of a {name}" for name in CLASSES])
    predicted = (model.encode(images) @ prompts.T).argmax(axis=1)
    expected = np.mean([CLASSES[p] == label for p, label in zip(predicted, labels, strict=True)])
    assert result["main_metric"] == "accuracy"
    assert result["main_score"] == pytest.approx(expected)


def test_retrieval_recall_at_k_equals_the_hand_computed_one(model, image_file):
    path, images, _, captions = image_file
    name = f"{path.parent.name}-test-t2i"  # the default name of the string form
    results = evaluate_model(
        model,
        [f"image_retrieval:{path}", {"type": "image_retrieval", "path": str(path), "direction": "i2t", "name": "i2t"}],
    )
    image_embeddings, texts = model.encode(images), list(dict.fromkeys(captions))
    text_embeddings = model.encode(texts)
    t2i = np.argsort(-(text_embeddings @ image_embeddings.T), axis=1)  # every image of the caption is relevant
    i2t = np.argsort(-(image_embeddings @ text_embeddings.T), axis=1)
    for k in (1, 5, 10):
        hits_t2i = np.mean([any(captions[i] == text for i in t2i[q, :k]) for q, text in enumerate(texts)])
        hits_i2t = np.mean([texts.index(captions[q]) in i2t[q, :k] for q in range(len(images))])
        assert results[name]["metrics"][f"hit_rate_at_{k}"] == pytest.approx(hits_t2i, abs=1e-5)
        assert results["i2t"]["metrics"][f"hit_rate_at_{k}"] == pytest.approx(hits_i2t, abs=1e-5)
    assert results[name]["main_metric"] == "hit_rate_at_1"


def test_image_task_specs_report_bad_input(image_file, tmp_path):
    path, *_ = image_file
    with pytest.raises(TaskSpecError, match="template"):
        resolve_task({"type": "zeroshot", "path": str(path), "template": "no placeholder"})
    with pytest.raises(TaskSpecError, match="unknown keys"):
        resolve_task({"type": "image_retrieval", "path": str(path), "template": "{}"})
    (tmp_path / "bad.jsonl").write_text(json.dumps({"image": "pics/none.png", "label": "cat"}) + "\n")
    with pytest.raises(DataFormatError, match=r"bad\.jsonl.*row 0.*none\.png"):
        resolve_task(f"zeroshot:{tmp_path / 'bad.jsonl'}")


def test_a_tar_shard_evaluates_like_the_table_it_was_written_from(model, image_file, tmp_path):
    path, *_ = image_file
    (shard,) = write_tar_shards(path, tmp_path / "shards", shard_size=100)
    specs = [{"type": "image_retrieval", "path": str(source), "name": name, **columns}
             for source, name, columns in ((path, "table", {}), (shard, "shard", {"text_column": "text"}))]  # fmt: skip
    results = evaluate_model(model, specs)
    assert results["shard"]["metrics"] == pytest.approx(results["table"]["metrics"])
    zeroshot = {"type": "zeroshot", "path": str(shard), "template": "a photo of a {}", "name": "pets"}
    reference = {**zeroshot, "path": str(path), "name": "reference"}
    scores = evaluate_model(model, [zeroshot, reference])
    assert scores["pets"]["main_score"] == pytest.approx(scores["reference"]["main_score"])
