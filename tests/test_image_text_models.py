"""Two-tower image-text models: plain save / reload, CLIP checkpoints as they are, LiT locking and its cache."""

from __future__ import annotations

import math
import shutil

import pytest
import torch
from datasets import Dataset
from image_text_helpers import (
    TINY_VIT,
    image_processor,
    parameters_of,
    random_images,
    tiny_two_tower,
)
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainingArguments
from sentence_transformers.sentence_transformer.modules import Dense

from st_contrast import ContrastiveTrainer
from st_contrast.losses import CLIPLoss
from st_contrast.recipes import clip_model, two_tower_model, vision_tower
from st_contrast.recipes.image_text import write_random_vision_model

TEXTS = ["a red circle on the left", "a handwritten digit seven", "a blue square at the top"]


def test_two_tower_model_encodes_text_and_images_and_reloads_as_plain_sentence_transformers(
    minilm_path, tmp_path, plain_sentence_transformers
):
    import numpy as np

    model = tiny_two_tower(minilm_path)
    images = random_images(4)
    text_embeddings, image_embeddings = model.encode(TEXTS), model.encode(images)
    assert text_embeddings.shape == (3, 16) and image_embeddings.shape == (4, 16)
    assert np.allclose(np.linalg.norm(image_embeddings, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(image_embeddings[0], image_embeddings[1]), "different images got the same embedding"

    model.save(str(tmp_path / "model"))
    reloaded = plain_sentence_transformers.encode(tmp_path / "model", TEXTS, images)
    np.testing.assert_allclose(reloaded[:3], text_embeddings, atol=1e-6)
    np.testing.assert_allclose(reloaded[3:], image_embeddings, atol=1e-6)


@pytest.mark.parametrize("packed", [False, True])
def test_locked_minilm_text_tower_embeds_as_minilm_itself(minilm_path, packed):
    """LiT keeps the text model as it is: with no projection (shared size = MiniLM's), its text embeddings are the
    packaged all-MiniLM-L6-v2's (padded or packed), served from the locked-tower cache for repeated captions."""
    model = two_tower_model(minilm_path, TINY_VIT, lock="text", packed=packed, device="cpu")
    reference = SentenceTransformer(minilm_path, device="cpu").encode(TEXTS + TEXTS[:1], convert_to_tensor=True)
    word_embeddings = model[0].sub_modules["text"][0].auto_model.embeddings.word_embeddings
    calls = []
    hook = word_embeddings.register_forward_hook(lambda module, args, output: calls.append(len(args[0])))
    model.train()  # the trainer's mode: the locked tower must stay in eval mode (no dropout)
    for _ in range(2):
        features = model.preprocess(TEXTS + TEXTS[:1])
        embeddings = model(features)["sentence_embedding"]
        torch.testing.assert_close(embeddings, reference, atol=1e-6, rtol=0)
    hook.remove()
    if not packed:  # packed batches are one flattened row: the cache steps aside (see cache_locked_embeddings)
        assert calls == [3], f"the locked tower should embed each distinct text once, ran on batches of {calls}"


def _train(model, output_dir, steps: int = 3) -> ContrastiveTrainer:
    images = random_images(8)
    dataset = Dataset.from_dict({"image": images, "caption": [f"caption number {i}" for i in range(8)]})
    args = SentenceTransformerTrainingArguments(
        str(output_dir), max_steps=steps, per_device_train_batch_size=4, learning_rate=1e-2, report_to=[],
        save_strategy="no", use_cpu=True,
    )  # fmt: skip
    trainer = ContrastiveTrainer(model=model, args=args, train_dataset=dataset, loss=CLIPLoss(model), monitoring=False)
    trainer.train()
    return trainer


@pytest.mark.parametrize("locked", ["text", "image"])
def test_lit_locked_tower_is_unchanged_out_of_the_optimizer_and_in_eval_mode(tiny_model_factory, locked, tmp_path):
    model = tiny_two_tower(tiny_model_factory("bert"), lock=locked)
    trained = "image" if locked == "text" else "text"
    router = model[0]
    before = {tower: parameters_of(router.sub_modules[tower]) for tower in ("text", "image")}
    trainer = _train(model, tmp_path)
    after = {tower: parameters_of(router.sub_modules[tower]) for tower in ("text", "image")}
    for name, value in before[locked].items():
        assert torch.equal(value, after[locked][name]), f"the locked {locked} tower changed: {name}"
    assert any(not torch.equal(value, after[trained][name]) for name, value in before[trained].items())
    optimized = {id(parameter) for group in trainer.optimizer.param_groups for parameter in group["params"]}
    assert not optimized & {id(parameter) for parameter in router.sub_modules[locked].parameters()}
    assert {id(parameter) for parameter in router.sub_modules[trained].parameters()} <= optimized
    model.train()
    assert not any(module.training for module in router.sub_modules[locked].modules())
    assert router.sub_modules[trained].training


def test_a_projection_on_a_locked_tower_is_refused(tiny_model_factory):
    """LiT keeps the locked tower's embeddings: a shared size other than its own would need a random projection on
    it that never trains."""
    with pytest.raises(ValueError, match="random projection on the locked tower"):
        two_tower_model(tiny_model_factory("bert"), TINY_VIT, embedding_dim=16, lock="text", device="cpu")
    model = two_tower_model(tiny_model_factory("bert"), TINY_VIT, lock="text", device="cpu")
    assert not any(isinstance(module, Dense) for module in model[0].sub_modules["text"])


def test_clip_checkpoint_is_used_as_it_is(minilm_path, tmp_path):
    """A single CLIP checkpoint: the embeddings are transformers' own get_text_features / get_image_features."""
    from transformers import AutoTokenizer, CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    text = {"vocab_size": len(tokenizer), "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 64, "max_position_embeddings": 64}  # fmt: skip
    vision = {"image_size": 16, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
              "intermediate_size": 64}  # fmt: skip
    torch.manual_seed(0)
    reference = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=8)).eval()
    reference.save_pretrained(tmp_path / "clip")
    size = {"shortest_edge": 16}
    processor = CLIPProcessor(CLIPImageProcessor(size=size, crop_size={"height": 16, "width": 16}), tokenizer)
    processor.save_pretrained(tmp_path / "clip")

    model = clip_model(str(tmp_path / "clip"), device="cpu")
    images = random_images(2)
    with torch.no_grad():
        inputs = processor(text=TEXTS, images=images, return_tensors="pt", padding=True)
        text_features = reference.get_text_features(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
        )
        image_features = reference.get_image_features(pixel_values=inputs["pixel_values"])
    expected_text = torch.nn.functional.normalize(getattr(text_features, "pooler_output", text_features), dim=-1)
    expected_image = torch.nn.functional.normalize(getattr(image_features, "pooler_output", image_features), dim=-1)
    torch.testing.assert_close(model.encode(TEXTS, convert_to_tensor=True), expected_text, atol=1e-5, rtol=0)
    torch.testing.assert_close(model.encode(images, convert_to_tensor=True), expected_image, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("config", "pooling", "expected_modules"),
    [
        ({"model_type": "dinov2"}, "auto", ["Transformer"]),  # its normalised CLS (pooler_output)
        ({"model_type": "clip_vision_model"}, "auto", ["Transformer"]),
        ({"model_type": "vit"}, "mean", ["Transformer", "Pooling"]),
    ],
)
def test_vision_towers_from_transformers(config, pooling, expected_modules):
    settings = {key: value for key, value in TINY_VIT.items() if key != "model_type"}
    modules = vision_tower({**settings, **config}, pooling=pooling)
    assert [type(module).__name__ for module in modules] == expected_modules
    model = SentenceTransformer(modules=modules, device="cpu")
    embeddings = model.encode(random_images(2), convert_to_tensor=True)
    assert embeddings.shape == (2, 32) and not torch.allclose(embeddings[0], embeddings[1])


@pytest.mark.parametrize("model_type", ["clip", "siglip"])
def test_image_half_of_a_dual_encoder_checkpoint_is_a_tower_with_its_image_features(tmp_path, model_type):
    """Only the vision model (and CLIP's projection, as a Dense) is loaded; the embeddings are the checkpoint's own
    get_image_features."""
    from transformers import AutoConfig, AutoModel

    settings = {key: value for key, value in TINY_VIT.items() if key != "model_type"}
    text = {"vocab_size": 99, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 64}  # fmt: skip
    extra = {"projection_dim": 8} if model_type == "clip" else {}
    torch.manual_seed(0)
    reference = AutoModel.from_config(
        AutoConfig.for_model(model_type, text_config=text, vision_config=settings, **extra)
    ).eval()
    reference.save_pretrained(tmp_path / model_type)
    write_random_vision_model({"model_type": f"{model_type}_vision_model", **settings}, tmp_path / "processor")
    shutil.copy(tmp_path / "processor" / "preprocessor_config.json", tmp_path / model_type)

    modules = vision_tower(str(tmp_path / model_type))
    expected_modules = ["Transformer", "Dense"] if model_type == "clip" else ["Transformer"]
    assert [type(module).__name__ for module in modules] == expected_modules
    assert not any("text" in name for name, _ in modules[0].named_parameters())
    tower = SentenceTransformer(modules=modules, device="cpu")
    images = random_images(3)
    pixels = image_processor(tmp_path / model_type)(images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        features = reference.get_image_features(pixel_values=pixels)
    expected = getattr(features, "pooler_output", features)
    torch.testing.assert_close(tower.encode(images, convert_to_tensor=True), expected, atol=1e-5, rtol=0)


def test_siglip_loss_continues_from_the_checkpoints_scale_and_bias(minilm_path, tmp_path):
    """``temperature: checkpoint`` and ``bias: checkpoint`` read SigLIP's learned logit scale and bias."""
    from transformers import AutoTokenizer, SiglipConfig, SiglipModel, SiglipProcessor

    from st_contrast.training.builders import build_loss, build_model

    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    settings = {key: value for key, value in TINY_VIT.items() if key != "model_type"}
    text = {"vocab_size": len(tokenizer), "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 64, "max_position_embeddings": 64}  # fmt: skip
    checkpoint = SiglipModel(SiglipConfig(text_config=text, vision_config=settings))
    with torch.no_grad():
        checkpoint.logit_scale.fill_(math.log(20.0))
        checkpoint.logit_bias.fill_(-7.5)
    checkpoint.save_pretrained(tmp_path / "siglip")
    write_random_vision_model({"model_type": "siglip_vision_model", **settings}, tmp_path / "processor")
    SiglipProcessor(image_processor(tmp_path / "processor"), tokenizer).save_pretrained(tmp_path / "siglip")
    model = build_model({"name_or_path": str(tmp_path / "siglip"), "packed": False})
    loss = build_loss(model, {"name": "SigLIPLoss", "kwargs": {"temperature": "checkpoint", "bias": "checkpoint"}})
    assert loss.learned_temperature.temperature == pytest.approx(1 / 20, rel=1e-6)
    assert loss.learned_temperature.logit_bias.item() == pytest.approx(-7.5)
