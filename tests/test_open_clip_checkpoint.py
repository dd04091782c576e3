"""open_clip checkpoints converted to plain Sentence Transformers models: embeddings equal open_clip's own
(``encode_text`` / ``encode_image`` after its tokenizer and evaluation transform) once reloaded without st_contrast or
open_clip, token ids equal on the STS benchmark, training checkpoints and folders in open_clip's format convert through
the CLI and the training config, and what transformers' CLIPModel cannot express is refused by name."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import torch
from in_process import run_cli
from PIL import Image
from safetensors.torch import save_file
from sentence_transformers import SentenceTransformer
from transformers import AutoTokenizer

from st_contrast.recipes import convert_open_clip
from st_contrast.recipes.open_clip_checkpoint import is_open_clip_checkpoint

try:
    import open_clip
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg, CustomTextCLIP
    from open_clip.tokenizer import SimpleTokenizer
    from open_clip.transform import PreprocessCfg, image_transform_v2
except Exception as error:  # noqa: BLE001 - a torchvision built for another torch fails with a RuntimeError
    pytest.skip(f"open_clip cannot be imported here: {error!r}", allow_module_level=True)

VISION = {"layers": 2, "width": 64, "head_width": 16, "patch_size": 8, "image_size": 32}
TEXT = {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 2}
CAPTIONS = ["a photo of a cat", "A red circle on the LEFT.", "Café déjà-vu, 1984!", "word " * 90]


def _tiny_clip(quick_gelu: bool = True, vision: dict | None = None, text: dict | None = None, seed: int = 0):
    """A random open_clip CLIP; weights redrawn so that no tensor keeps a constant initialisation (LayerNorm ones,
    zero biases) that would hide a misplaced or untransposed weight."""
    torch.manual_seed(seed)
    vision_cfg, text_cfg = CLIPVisionCfg(**{**VISION, **(vision or {})}), CLIPTextCfg(**{**TEXT, **(text or {})})
    model = CLIP(16, vision_cfg, text_cfg, quick_gelu=quick_gelu)
    for parameter in model.parameters():
        parameter.data.normal_(0, 0.05)
    return model.eval()


def _write_open_clip_folder(model, directory, preprocess: dict | None = None, quick_gelu: bool = True):
    """A folder in open_clip's hub format: ``open_clip_config.json`` (model and preprocess settings) + weights."""
    directory.mkdir(parents=True, exist_ok=True)
    model_cfg = {"embed_dim": 16, "quick_gelu": quick_gelu, "vision_cfg": VISION, "text_cfg": TEXT}
    config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess or {}}
    (directory / "open_clip_config.json").write_text(json.dumps(config))
    save_file({name: tensor.contiguous() for name, tensor in model.state_dict().items()},
              str(directory / "open_clip_model.safetensors"))  # fmt: skip
    return directory


def _images(size: int) -> list[Image.Image]:
    """Noise images open_clip's transform and the converted image processor both resize and crop alike: the input
    size, a crop, a downscale and an upscale, each leaving an even number of pixels to crop (see the module)."""
    rng = np.random.default_rng(1)
    shapes = [(size, size), (size, size + 6), (3 * size, 2 * size), (size // 2, size)]
    return [Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)) for shape in shapes]


def _open_clip_embeddings(name: str, texts: list[str], images: list[Image.Image]) -> np.ndarray:
    """What open_clip itself computes: its model, tokenizer and evaluation transform, normalised features."""
    model, _, transform = open_clip.create_model_and_transforms(name)
    tokenizer = open_clip.get_tokenizer(name)
    with torch.no_grad():
        text = model.eval().encode_text(tokenizer(texts), normalize=True)
        image = model.encode_image(torch.stack([transform(image) for image in images]), normalize=True)
    return torch.cat([text, image]).numpy()


@pytest.mark.parametrize(
    ("quick_gelu", "preprocess"),
    [
        (True, {}),  # OpenAI's CLIP: QuickGELU, OpenAI mean / std, bicubic, shortest side + centre crop
        (False, {"mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bilinear", "resize_mode": "squash"}),
    ],
)
def test_converted_folder_embeds_as_open_clip_once_reloaded_without_st_contrast(
    tmp_path, quick_gelu, preprocess, plain_sentence_transformers
):
    folder = _write_open_clip_folder(_tiny_clip(quick_gelu), tmp_path / "open_clip", preprocess, quick_gelu)
    assert is_open_clip_checkpoint(str(folder)) and not is_open_clip_checkpoint(str(tmp_path))
    report = convert_open_clip(str(folder), tmp_path / "converted")
    assert report.text_difference < 1e-6 and report.image_difference < 5e-5  # resampling: PIL in both

    images = _images(32)
    reference = _open_clip_embeddings(f"local-dir:{folder}", CAPTIONS, images)
    reloaded = plain_sentence_transformers.encode(tmp_path / "converted", CAPTIONS, images)  # without st_contrast
    np.testing.assert_allclose(reloaded, reference, atol=2e-5)
    assert not np.allclose(reloaded[:4] @ reloaded[:4].T, 1, atol=1e-2)  # the captions are told apart

    model = SentenceTransformer(str(tmp_path / "converted"), device="cpu")
    assert model.max_seq_length == 77
    assert model[0].model.logit_scale.item() == pytest.approx(_tiny_clip(quick_gelu).logit_scale.item())
    assert model[0].model.config.text_config.hidden_act == ("quick_gelu" if quick_gelu else "gelu")


def test_tokenizer_gives_open_clips_token_ids_on_every_sts_benchmark_sentence(tmp_path, shared_data):
    convert_open_clip(_tiny_clip(), tmp_path / "converted", verify=False)
    with gzip.open(shared_data / "sts" / "stsbenchmark" / "test.tsv.gz", "rt", encoding="utf8") as handle:
        sentences = sorted({sentence for line in handle for sentence in line.rstrip("\n").split("\t")[5:7]})
    sentences += [
        "  spaces\tand\nnewlines  ",
        "UPPER lower MiXeD",
        "naïve café",
        "日本語",
        "🤗 emoji",
        "x " * 200,
        "ﬁne ＦＵＬＬ-width &amp;amp; &quot;x&quot; ‘single’ “double” a\u200bb",
        "it&rsquo;s a caf&eacute; &mdash; nice&hellip; &copy; &alpha;&beta; &times;2",
        "5 &#8364; coffee &#233;clair &#x2019; &#xe9; &#39;x&#39; &#8220;q&#8221;",
        "&amp;eacute; &amp;#233; &amp;quot;x&amp;quot; rock &amp; roll &lt;3 &gt;",
    ]  # ftfy's tables, HTML entities (named, numeric, escaped twice)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "converted")
    expected = SimpleTokenizer()(sentences)
    encoded = tokenizer(sentences, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    mask = encoded["attention_mask"].bool()
    assert len(sentences) > 2500
    assert torch.equal(encoded["input_ids"][mask], expected[mask])  # every real token, end of text included
    assert torch.equal(mask, expected != 0)  # open_clip pads with 0 after the end-of-text token


def test_training_checkpoint_of_an_open_clip_run_converts_through_the_cli(tmp_path, capsys):
    """``epoch_N.pt`` as open_clip's trainer writes it (DDP ``module.`` prefixes) for an architecture it knows."""
    (tmp_path / "configs").mkdir()
    model_cfg = {"embed_dim": 16, "quick_gelu": True, "vision_cfg": VISION, "text_cfg": TEXT}
    (tmp_path / "configs" / "st-contrast-tiny.json").write_text(json.dumps(model_cfg))
    open_clip.add_model_config(tmp_path / "configs")
    trained = _tiny_clip(seed=3)
    state = {f"module.{name}": tensor for name, tensor in trained.state_dict().items()}
    torch.save({"epoch": 1, "name": "run", "state_dict": state}, tmp_path / "epoch_1.pt")

    output = run_cli("convert-open-clip", "st-contrast-tiny", str(tmp_path / "out"), "--pretrained",
                     str(tmp_path / "epoch_1.pt"))  # fmt: skip
    report = json.loads(output[output.index("{") :])
    assert report["output_dir"] == str(tmp_path / "out") and report["text_difference"] < 1e-6
    assert report["logit_scale"] == pytest.approx(trained.logit_scale.exp().item(), rel=1e-6)
    model = SentenceTransformer(str(tmp_path / "out"), device="cpu")
    with torch.no_grad():
        expected = trained.encode_text(SimpleTokenizer()(CAPTIONS), normalize=True).numpy()
    np.testing.assert_allclose(model.encode(CAPTIONS), expected, atol=1e-6)


def _refused(**settings):
    vision = {key: value for key, value in settings.items() if key in CLIPVisionCfg.__dataclass_fields__}
    text = {key.removeprefix("text_"): value for key, value in settings.items() if key.startswith("text_")}
    return _tiny_clip(vision=vision, text=text)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: _refused(ls_init_value=0.1), r"LayerScale \(ls_init_value\)"),
        (lambda: _refused(attentional_pool=True, attn_pooler_heads=4), "attentional pooling"),
        (lambda: _refused(pool_type="avg"), "image pooling 'avg'"),
        (lambda: _refused(no_ln_pre=True), "no LayerNorm before the image transformer"),
        (lambda: _refused(qk_norm=True), "custom attention blocks"),
        (lambda: _refused(text_no_causal_mask=True), "no causal mask in the text tower"),
        (lambda: _refused(text_pool_type="last"), "text pooling 'last'"),
        (lambda: _refused(text_proj_bias=True), "biased or missing text projection"),
        (lambda: CustomTextCLIP(16, CLIPVisionCfg(**VISION), CLIPTextCfg(**TEXT)), "CustomTextCLIP is not open_clip"),
    ],
)
def test_what_clip_model_cannot_express_is_refused_by_its_setting(tmp_path, build, message):
    with pytest.raises(ValueError, match=message):
        convert_open_clip(build(), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_preprocessing_an_image_processor_cannot_express_is_refused(tmp_path):
    """open_clip's ``longest`` resize pads to a square; CLIP's image processor has no such step."""
    folder = _write_open_clip_folder(_tiny_clip(), tmp_path / "open_clip", {"resize_mode": "longest"})
    with pytest.raises(ValueError, match="cannot convert open_clip model .*resize_mode 'longest'"):
        convert_open_clip(str(folder), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_tokenizer_that_cleans_text_otherwise_is_refused(tmp_path):
    with pytest.raises(ValueError, match="cleans text other than by lower-casing"):
        convert_open_clip(_tiny_clip(), tmp_path / "out", tokenizer=SimpleTokenizer(clean="whitespace"))


def test_a_source_open_clip_cannot_name_is_one_line_naming_it(tmp_path, capsys):
    from st_contrast.cli import main

    assert main(["convert-open-clip", str(tmp_path / "nowhere"), str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert "is neither a folder in open_clip's format" in error and str(tmp_path / "nowhere") in error
    assert "\n" not in error and not (tmp_path / "out").exists()
    (tmp_path / "empty").mkdir()  # a folder open_clip itself refuses: no open_clip_config.json
    assert main(["convert-open-clip", str(tmp_path / "empty"), str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("st-contrast convert-open-clip: error: open_clip cannot load 'local-dir:")
    assert "open_clip_config.json" in error and "\n" not in error and not (tmp_path / "out").exists()
    # open_clip's own spelling of a folder is passed to open_clip too (not refused as an unknown architecture)
    assert main(["convert-open-clip", f"local-dir:{tmp_path / 'empty'}", str(tmp_path / "out")]) == 2
    assert "open_clip cannot load 'local-dir:" in capsys.readouterr().err


def test_the_cli_reports_an_unconvertible_checkpoint_in_one_line(tmp_path, capsys):
    from st_contrast.cli import main

    folder = _write_open_clip_folder(_tiny_clip(), tmp_path / "open_clip")
    config = json.loads((folder / "open_clip_config.json").read_text())
    config["model_cfg"]["vision_cfg"]["pool_type"] = "avg"
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    assert main(["convert-open-clip", str(folder), str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("st-contrast convert-open-clip: error: cannot convert open_clip model")
    assert "\n" not in error
    assert "image pooling 'avg'" in error


def test_odd_crop_offsets_are_the_one_known_difference(tmp_path):
    """transformers rounds an odd centre-crop offset down and torchvision to the nearest: one pixel of shift, a
    small difference, documented rather than hidden."""
    report = convert_open_clip(_tiny_clip(), tmp_path / "converted")
    model = SentenceTransformer(str(tmp_path / "converted"), device="cpu")
    rng = np.random.default_rng(2)
    image = Image.fromarray(rng.integers(0, 256, (32, 35, 3), dtype=np.uint8))  # 3 columns to crop
    transform = image_transform_v2(PreprocessCfg(size=32), is_train=False)
    reference = _tiny_clip().encode_image(transform(image)[None], normalize=True).detach().numpy()
    difference = np.abs(model.encode([image]) - reference).max()
    assert report.image_difference < 1e-5 < difference < 0.2


def test_st_contrast_train_fine_tunes_an_open_clip_folder_into_a_plain_model(tmp_path):
    from st_contrast.data.synthetic_images import write_shapes

    folder = _write_open_clip_folder(_tiny_clip(), tmp_path / "open_clip")
    data = write_shapes(tmp_path / "shapes", train_per_combination=1)
    config = {
        "output_dir": str(tmp_path / "run"),
        "model": {"name_or_path": str(folder), "packed": False},
        "loss": {"name": "CLIPLoss", "kwargs": {"temperature": 0.05}},
        "data": {"datasets": [{"name": "shapes", "path": str(data / "train.jsonl"), "columns": ["image", "caption"],
                               "image_columns": ["image"]}], "batch_sampler": "batch_sampler"},
        "training": {"per_device_train_batch_size": 8, "max_steps": 3, "learning_rate": 1e-3, "save_steps": 3},
    }  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(config))
    run_cli("train", str(tmp_path / "config.json"))

    trained = SentenceTransformer(str(tmp_path / "run" / "model"), device="cpu")
    start = SentenceTransformer(str(convert_open_clip(str(folder), tmp_path / "start").output_dir), device="cpu")
    assert [type(module).__name__ for module in trained] == ["Transformer", "Normalize"]
    assert not np.allclose(trained.encode(CAPTIONS), start.encode(CAPTIONS), atol=1e-4)  # it trained


def test_open_clip_image_tower_locked_under_a_new_text_tower_embeds_as_open_clip(tmp_path, minilm_path):
    """LiT with open_clip's image half: ``model.vision`` names the open_clip folder, only its image tower is loaded,
    locked, and embeds images as open_clip does; MiniLM is projected to its 16 dimensions."""
    from st_contrast.training.builders import build_model
    from st_contrast.training.specs import ModelSpec

    folder = _write_open_clip_folder(_tiny_clip(), tmp_path / "open_clip")
    spec = {"name_or_path": minilm_path, "packed": False, "vision": str(folder), "lock": "image", "embedding_dim": 16}
    model = build_model(ModelSpec.from_dict(spec))
    image_tower = model[0].sub_modules["image"]
    assert [type(module).__name__ for module in image_tower] == ["Transformer", "Dense"]
    assert not any(parameter.requires_grad for parameter in image_tower.parameters())
    assert type(model[0].sub_modules["text"][-1]).__name__ == "Dense"
    images = _images(32)
    reference = _open_clip_embeddings(f"local-dir:{folder}", [], images)
    np.testing.assert_allclose(model.encode(images), reference, atol=2e-5)


def test_loss_temperature_continues_from_the_checkpoints_logit_scale(tmp_path, minilm_path):
    """``temperature: checkpoint``: the loss starts at open_clip's learned temperature (1 / exp(logit_scale)), read
    from the open_clip model itself; a model without one is a config error naming the key."""
    from st_contrast.training.builders import build_loss, build_model
    from st_contrast.training.validation import ConfigError

    trained = _tiny_clip()
    with torch.no_grad():
        trained.logit_scale.fill_(np.log(50.0))  # what a finished open_clip run leaves (CLIP starts at log(1/0.07))
    folder = _write_open_clip_folder(trained, tmp_path / "open_clip")
    model = build_model({"name_or_path": str(folder), "packed": False})
    spec = {"name": "CLIPLoss", "kwargs": {"temperature": "checkpoint"}}
    assert build_loss(model, spec).learned_temperature.temperature == pytest.approx(0.02, rel=1e-5)
    with pytest.raises(ConfigError, match="'checkpoint' takes the model's learned logit_scale"):
        build_loss(build_model({"name_or_path": minilm_path}), spec)


def test_st_contrast_eval_scores_an_open_clip_folder_as_open_clip_itself_classifies(tmp_path):
    """Zero-shot digits through ``st-contrast eval FOLDER``: the accuracy equals the one computed with open_clip's
    own encoders, tokenizer and transform on the same images and prompts."""
    from st_contrast.data.synthetic_images import DIGIT_NAMES, write_digits

    folder = _write_open_clip_folder(_tiny_clip(seed=4), tmp_path / "open_clip")
    digits = write_digits(tmp_path / "data", size=32)
    output = tmp_path / "eval"
    run_cli("eval", str(folder), "--tasks", f"zeroshot:{digits / 'test.jsonl'}", "--output-dir", str(output),
            "--no-progress")  # fmt: skip
    score = json.loads((output / "results.json").read_text())["digits-test"]["main_score"]

    rows = [json.loads(line) for line in (digits / "test.jsonl").read_text().splitlines()]
    images = [Image.open(digits / row["image"]).convert("RGB") for row in rows]
    embeddings = _open_clip_embeddings(f"local-dir:{folder}", list(DIGIT_NAMES), images)  # the default template, '{}'
    predicted = (embeddings[10:] @ embeddings[:10].T).argmax(axis=1)
    expected = np.mean([DIGIT_NAMES[p] == row["label"] for p, row in zip(predicted, rows, strict=True)])
    assert 0 < score == pytest.approx(expected, abs=1e-9)
