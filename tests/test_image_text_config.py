"""The image-text forms of the run configuration: model.vision / lock / embedding_dim, loss.gradcache, data.prepare."""

from __future__ import annotations

import pytest
from sentence_transformers.base.modules import Dense, Router
from test_training_config import BASE, write

from st_contrast.losses import GradCacheLoss, SigLIPLoss
from st_contrast.training.builders import build_loss, build_model
from st_contrast.training.config import ConfigError, load_config

VISION = {"config": {"model_type": "vit", "image_size": 16, "patch_size": 8, "hidden_size": 32,
                     "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}}  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": {"name_or_path": "minilm", "vision": {"config": {}, "name_or_path": "x"}}}, "exactly one of"),
        ({"model": {"name_or_path": "minilm", "vision": {"size": 3}}}, r"Unknown key\(s\) \['size'\] in model.vision"),
        ({"model": {"name_or_path": "minilm", "vision": {"config": 3}}}, "model.vision.config must be a mapping"),
        ({"model": {"name_or_path": "minilm", "vision": VISION, "lock": "both"}}, "model.lock must be 'text' or"),
        ({"model": {"name_or_path": "minilm", "lock": "text"}}, "need a two-tower model"),
        ({"model": {"name_or_path": "minilm", "vision": VISION, "embedding_dim": 0}}, "embedding_dim must be positive"),
        ({"loss": {"name": "SigLIPLoss", "gradcache": {"mini_batch": 4}}}, r"Unknown key\(s\) \['mini_batch'\]"),
        ({"loss": {"name": "SigLIPLoss", "gradcache": {"mini_batch_size": 0}}}, "mini_batch_size must be positive"),
        ({"data": {**BASE["data"], "prepare": {"function": "nowhere:write"}}}, "cannot be imported"),
        ({"data": {**BASE["data"], "prepare": {"function": "write"}}}, "'package.module:function'"),
    ],
)
def test_invalid_image_text_configurations_are_refused(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, {**BASE, **change}))


def test_two_tower_model_and_cached_loss_from_the_config(tmp_path, minilm_path):
    config = load_config(
        write(
            tmp_path,
            {
                **BASE,
                "model": {
                    "name_or_path": minilm_path,
                    "packed": False,
                    "vision": VISION,
                    "lock": "image",
                },
                "loss": {"name": "SigLIPLoss", "gradcache": {"mini_batch_size": 4}},
            },
        )  # fmt: skip
    )
    model = build_model(config.model)
    router = model[0]
    assert isinstance(router, Router) and set(router.sub_modules) == {"text", "image"}
    assert model.encode(["a caption"]).shape == (1, 32)  # the locked image tower's size; the text tower projected
    assert isinstance(router.sub_modules["text"][-1], Dense) and router.sub_modules["text"][-1].out_features == 32
    assert not any(isinstance(module, Dense) for module in router.sub_modules["image"])
    assert not any(parameter.requires_grad for parameter in router.sub_modules["image"].parameters())
    assert all(parameter.requires_grad for parameter in router.sub_modules["text"][0].parameters())
    loss = build_loss(model, config.loss)
    assert isinstance(loss, GradCacheLoss) and isinstance(loss.loss, SigLIPLoss) and loss.mini_batch_size == 4


def test_a_projection_on_a_locked_tower_is_a_config_error_naming_the_key(tmp_path, minilm_path):
    """embedding_dim may equal the locked tower's own size; any other would need a never-trained projection on it."""
    model = {"name_or_path": minilm_path, "packed": False, "vision": VISION, "lock": "image", "embedding_dim": 24}
    config = load_config(write(tmp_path, {**BASE, "model": model}))
    with pytest.raises(ConfigError, match="model.embedding_dim: lock='image' keeps the image tower's embeddings"):
        build_model(config.model)
    config = load_config(write(tmp_path, {**BASE, "model": {**model, "embedding_dim": 32}}))
    assert build_model(config.model).encode(["a caption"]).shape == (1, 32)


def test_a_vision_tower_the_config_cannot_build_is_a_config_error_naming_the_key(tmp_path, minilm_path):
    """Found when the model is built (the tower's own checks), reported as the config's error (one line, exit 2)."""
    vision = {"config": {"model_type": "bert"}}
    config = load_config(
        write(tmp_path, {**BASE, "model": {"name_or_path": minilm_path, "packed": False, "vision": vision}})
    )
    with pytest.raises(ConfigError, match="model.vision: A random vision tower needs a 'model_type' with an image"):
        build_model(config.model)
