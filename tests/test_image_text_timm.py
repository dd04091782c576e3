"""timm vision towers: a checkpoint in timm's own format embeds exactly as timm itself computes (its preprocessing,
features and head pooling), random towers are timm checkpoints, a two-tower model with one trains (GradCache
included, stochastic depth replayed) and reloads as plain Sentence Transformers, GradCache over BatchNorm warns, and
the settings timm cannot take are refused."""

from __future__ import annotations

import copy

import pytest
import torch
from image_text_helpers import image_text_columns, parameters_of, random_images
from loss_helpers import gradients
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainingArguments

from st_contrast import ContrastiveTrainer
from st_contrast.losses import CachedInfoNCELoss, CLIPLoss
from st_contrast.recipes import two_tower_model, vision_tower
from st_contrast.recipes.image_text import write_random_vision_model

try:
    import timm
    from timm.models._hub import save_for_hf
except Exception as error:  # noqa: BLE001 - a torchvision built for another torch fails with a RuntimeError
    pytest.skip(f"timm cannot be imported here: {error!r}", allow_module_level=True)

TOWERS = {
    "vit": {"architecture": "vit_tiny_patch16_224", "image_size": 32,
            "model_args": {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 48, "num_heads": 2}},
    "convnext": {"architecture": "convnext_atto", "image_size": 32},
    "resnet": {"architecture": "resnet10t", "image_size": 32},
}  # fmt: skip
"""A class-token ViT, a ConvNeXt (average pooling + LayerNorm head) and a ResNet (BatchNorm, average pooling)."""

CAPTIONS = [f"a {colour} {shape}" for colour in ("red", "blue", "green") for shape in ("circle", "square", "cross")]


def _timm_reference(spec: dict) -> torch.nn.Module:
    size = spec["image_size"]
    overlay = {"input_size": (3, size, size)}
    arguments = spec.get("model_args", {})
    return timm.create_model(spec["architecture"], num_classes=0, pretrained_cfg_overlay=overlay, **arguments).eval()


def _timm_embeddings(reference: torch.nn.Module, images: list) -> torch.Tensor:
    """timm's own pipeline: its eval transform from the model's data config, features, head pooling."""
    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=reference))
    with torch.no_grad():
        features = reference.forward_features(torch.stack([transform(image) for image in images]))
        return reference.forward_head(features, pre_logits=True)


@pytest.mark.parametrize("name", list(TOWERS))
def test_a_checkpoint_saved_by_timm_embeds_as_timm_itself(tmp_path, name):
    """A folder written by timm's save_for_hf (the format of timm/... hub checkpoints) as a vision tower: one
    Transformer module whose embeddings are timm's pre-logits features of timm's own preprocessing."""
    torch.manual_seed(0)
    reference = _timm_reference(TOWERS[name])
    save_for_hf(reference, str(tmp_path / name), model_args=TOWERS[name].get("model_args"), safe_serialization=True)
    modules = vision_tower(str(tmp_path / name))
    assert [type(module).__name__ for module in modules] == ["Transformer"]
    model = SentenceTransformer(modules=modules, device="cpu")
    assert model.get_embedding_dimension() == reference.num_features
    images = random_images(3, size=40)  # resized and cropped to 32 by timm's transform
    embeddings = model.encode(images, convert_to_tensor=True)
    torch.testing.assert_close(embeddings, _timm_embeddings(reference, images), atol=1e-5, rtol=0)


def test_a_random_timm_tower_is_a_timm_checkpoint_that_timm_loads(tmp_path):
    spec = {"model_type": "timm_wrapper", **TOWERS["vit"]}
    spec["model_args"] = {**spec["model_args"], "drop_path_rate": 0.1}
    path = write_random_vision_model(spec, tmp_path / "tower", seed=3)
    loaded = timm.create_model(f"local-dir:{path}", pretrained=True).eval()  # timm's own loader
    assert tuple(loaded.pretrained_cfg["input_size"]) == (3, 32, 32) and loaded.patch_embed.patch_size == (8, 8)
    assert len(loaded.blocks) == 2 and loaded.blocks[1].drop_path1.drop_prob == pytest.approx(0.1)
    torch.manual_seed(3)
    fresh = _timm_reference({**spec, "model_args": spec["model_args"]})
    for key, value in fresh.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, atol=0, rtol=0, msg=f"{key} differs")
    images = random_images(2, size=32)
    tower = SentenceTransformer(modules=vision_tower(path), device="cpu")
    torch.testing.assert_close(
        tower.encode(images, convert_to_tensor=True), _timm_embeddings(loaded, images), atol=1e-5, rtol=0
    )


def test_lit_with_a_timm_tower_trains_and_reloads_as_plain_sentence_transformers(
    minilm_path, tmp_path, plain_sentence_transformers
):
    import numpy as np
    from datasets import Dataset

    model = two_tower_model(
        minilm_path, {"model_type": "timm_wrapper", **TOWERS["convnext"]}, lock="text", device="cpu"
    )
    router = model[0]
    assert [type(module).__name__ for module in router.sub_modules["image"]] == ["Transformer", "Dense"]
    before = parameters_of(router.sub_modules["image"])
    images = random_images(8, size=32)
    dataset = Dataset.from_dict({"image": images, "caption": [f"caption number {i}" for i in range(8)]})
    args = SentenceTransformerTrainingArguments(
        str(tmp_path / "run"), max_steps=2, per_device_train_batch_size=8, learning_rate=1e-2, report_to=[],
        save_strategy="no", use_cpu=True,
    )  # fmt: skip
    loss = CachedInfoNCELoss(
        model, mini_batch_size=3, directions=("query_to_doc", "doc_to_query"), partition_mode="per_direction"
    )
    ContrastiveTrainer(model=model, args=args, train_dataset=dataset, loss=loss, monitoring=False).train()
    after = parameters_of(router.sub_modules["image"])
    assert any("timm_model" in name and not torch.equal(before[name], after[name]) for name in before)

    model.eval()
    texts = CAPTIONS[:3]
    expected = np.concatenate([model.encode(texts), model.encode(images)])
    model.save(str(tmp_path / "model"))
    np.testing.assert_allclose(
        plain_sentence_transformers.encode(tmp_path / "model", texts, images), expected, atol=1e-6
    )


def test_gradcache_over_a_timm_tower_gives_the_uncached_gradients(tiny_model_factory):
    base = two_tower_model(
        tiny_model_factory("bert"), {"model_type": "timm_wrapper", **TOWERS["convnext"]}, embedding_dim=16, seed=1,
        device="cpu",
    )  # fmt: skip
    images, labels = random_images(len(CAPTIONS), size=32), torch.arange(len(CAPTIONS))
    results = []
    for build in (
        lambda model: CLIPLoss(model, temperature=0.07),
        lambda model: CachedInfoNCELoss(
            model, temperature=0.07, mini_batch_size=4, directions=("query_to_doc", "doc_to_query"),
            partition_mode="per_direction",
        ),
    ):  # fmt: skip
        model = copy.deepcopy(base)
        loss = build(model)(image_text_columns(model, images, CAPTIONS), labels)
        loss.backward()
        results.append((loss.item(), gradients(model)))
    (loss, expected), (cached_loss, actual) = results
    assert any("timm_model" in name for name in expected)
    assert abs(cached_loss - loss) < 1e-5 * max(1.0, abs(loss))
    scale = max(float(gradient.abs().max()) for gradient in expected.values())
    for name, gradient in expected.items():
        torch.testing.assert_close(actual[name], gradient, atol=1e-4 * scale, rtol=0, msg=f"{name} differs")


@pytest.mark.parametrize(
    ("config", "pooling", "message"),
    [
        ({"architecture": "convnext_atto"}, "mean", "a timm tower pools with timm's own head.*global_pool"),
        ({"architecture": "no_such_network"}, "auto", "an 'architecture' that timm knows.*'no_such_network'"),
        ({"architecture": "convnext_atto", "hidden_size": 64}, "auto", r"Unknown key\(s\) \['hidden_size'\]"),
    ],
)
def test_settings_a_timm_tower_cannot_take_are_refused(config, pooling, message):
    with pytest.raises(ValueError, match=message):
        vision_tower({"model_type": "timm_wrapper", "image_size": 32, **config}, pooling=pooling)


@pytest.mark.parametrize("lock", [None, "image"])
def test_gradcache_over_batch_norm_layers_in_training_warns_once(tiny_model_factory, caplog, lock):
    """A ResNet tower's BatchNorm layers normalise each GradCache mini-batch by its own statistics, so the cached
    loss is not the whole batch's: said once, with the fix; a locked tower (eval mode) has nothing to say."""
    model = two_tower_model(
        tiny_model_factory("bert"), {"model_type": "timm_wrapper", **TOWERS["resnet"]},
        embedding_dim=None if lock else 16, lock=lock, device="cpu",
    )  # fmt: skip
    model.train()
    images = random_images(len(CAPTIONS), size=32)
    cached = CachedInfoNCELoss(
        model, temperature=0.07, mini_batch_size=4, directions=("query_to_doc", "doc_to_query"),
        partition_mode="per_direction",
    )  # fmt: skip
    with caplog.at_level("WARNING", logger="st_contrast.losses.batch_norm"):
        for _ in range(2):
            cached_loss = cached(image_text_columns(model, images[:8], CAPTIONS[:8]), None).item()
    warnings = [record.getMessage() for record in caplog.records if "BatchNorm" in record.getMessage()]
    if lock == "image":
        assert warnings == []
        return
    assert len(warnings) == 1 and "CachedInfoNCELoss embeds in mini-batches of 4 rows" in warnings[0]
    assert "timm_model." in warnings[0] and "lock the tower" in warnings[0]
    uncached = CLIPLoss(model, temperature=0.07)
    whole_batch_loss = uncached(image_text_columns(model, images[:8], CAPTIONS[:8]), None).item()
    assert abs(whole_batch_loss - cached_loss) > 1e-3  # what the warning says: per mini-batch statistics


def test_gradcache_replays_timm_stochastic_depth(tiny_model_factory):
    """timm's stochastic depth drops whole residual branches per sample at random: GradCache must draw the same in
    both of its passes. Reference: the uncached loss on embeddings made one mini-batch at a time from the same seed
    (GradCache's draws, in its order), back-propagated directly."""
    from sentence_transformers.base.losses.gradcache import _create_minibatch

    from st_contrast.losses import InfoNCELoss

    vit = {**TOWERS["vit"], "model_args": {**TOWERS["vit"]["model_args"], "drop_path_rate": 0.5}}
    base = two_tower_model(
        tiny_model_factory("bert"), {"model_type": "timm_wrapper", **vit}, embedding_dim=16, seed=1, device="cpu"
    )
    base.train()
    images, mini_batch_size = random_images(len(CAPTIONS), size=32), 4
    features = image_text_columns(base, images, CAPTIONS)
    with torch.no_grad():
        assert not torch.equal(
            base(dict(features[0]))["sentence_embedding"], base(dict(features[0]))["sentence_embedding"]
        )
    clip = {"temperature": 0.07, "directions": ("query_to_doc", "doc_to_query"), "partition_mode": "per_direction"}

    cached_model = copy.deepcopy(base)
    torch.manual_seed(5)
    CachedInfoNCELoss(cached_model, mini_batch_size=mini_batch_size, **clip)(
        [dict(f) for f in features], None
    ).backward()

    reference_model = copy.deepcopy(base)
    torch.manual_seed(5)
    columns = [
        torch.cat([
            reference_model(_create_minibatch(dict(feature), begin, begin + mini_batch_size))["sentence_embedding"]
            for begin in range(0, len(CAPTIONS), mini_batch_size)
        ])
        for feature in features
    ]  # fmt: skip
    InfoNCELoss(reference_model, **clip).compute_loss_from_embeddings(columns, None).backward()

    expected, actual = gradients(reference_model), gradients(cached_model)
    assert any("timm_model.blocks" in name for name in expected) and actual.keys() == expected.keys()
    for name, gradient in expected.items():
        torch.testing.assert_close(actual[name], gradient, atol=1e-5, rtol=1e-4, msg=f"{name} differs")
