"""st-contrast train configuration: YAML + --set overrides, validation errors, and the builders it drives."""

from __future__ import annotations

import pytest
import torch
import yaml
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Transformer
from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss, MultipleNegativesRankingLoss

from st_contrast.losses import CachedInfoNCELoss, GlobalContrastiveLoss, GloFND, InfoNCELoss
from st_contrast.modules import FlashTransformer
from st_contrast.training.arguments import build_training_arguments
from st_contrast.training.builders import build_loss, build_model
from st_contrast.training.config import ConfigError, apply_overrides, load_config
from st_contrast.training.specs import LossSpec, resolve_loss_class

BASE = {
    "output_dir": "runs/x",
    "model": {"name_or_path": "minilm"},
    "loss": {"name": "InfoNCELoss"},
    "data": {"datasets": [{"name": "nli", "path": "a.tsv", "max_rows": 10}]},
    "training": {"max_steps": 5},
}


TWO_DATASETS = {"datasets": [{"name": "a", "path": "a.tsv"}, {"name": "b", "path": "b.tsv"}]}


def dataset(**fields) -> dict:
    """A data section whose one dataset entry has ``fields``."""
    return {"data": {"datasets": [{"name": "x", "path": "a", **fields}]}}


def write(tmp_path, config) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf8")
    return str(path)


def test_overrides_parse_yaml_values_into_nested_keys_and_list_items(tmp_path):
    config = load_config(
        write(tmp_path, BASE),
        [
            "training.max_steps=10",
            "training.learning_rate=2e-5",
            "loss.matryoshka.dims=[384, 64]",
            "data.datasets.0.max_rows=500",
            "model.packed=false",
            "training.eval_strategy=no",
            "training.use_cpu=true",
        ],
    )
    assert config.training == {"max_steps": 10, "learning_rate": 2e-5, "eval_strategy": "no", "use_cpu": True}
    assert config.loss.matryoshka.dims == [384, 64]
    assert config.data.datasets[0]["max_rows"] == 500
    assert config.model.packed is False
    assert config.raw["model"] == {"name_or_path": "minilm", "packed": False}, "config.yaml records what was given"
    assert BASE["training"]["max_steps"] == 5, "overrides must not modify the input"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("training.max_steps", "key=value"),
        ("data.datasets.3.max_rows=1", "not an index"),
        ("model.name_or_path.x=1", "is a value"),
    ],
)
def test_bad_overrides_are_explained(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(BASE, [override])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"optimiser": {}}, "Unknown configuration section"),
        ({"model": {"name_or_path": "minilm", "pooling_mode": "mean"}}, r"Unknown key\(s\) \['pooling_mode'\]"),
        ({"model": {"name_or_path": "minilm", "max_seq_length": "long"}}, "model.max_seq_length must be"),
        ({"model": {"name_or_path": "minilm", "max_seq_length": 0}}, "model.max_seq_length must be positive"),
        ({"model": {"name_or_path": "minilm", "backbone": "padded"}}, "'flash' or 'stock'"),
        ({"model": {"name_or_path": "minilm", "attention_backend": "xformers"}}, "Unknown attention backend"),
        ({"training": {"learning_rate": "fast"}}, r"training.learning_rate must be a number, got 'fast'"),
        ({"training": {"max_steps": "two"}}, "training.max_steps must be an integer"),
        ({"training": {"max_steps": -5}}, "training.max_steps must be positive"),
        ({"training": {"per_device_train_batch_size": 0}}, "per_device_train_batch_size must be at least 1"),
        ({"training": {"max_stepz": 5}}, "Unknown training argument 'max_stepz'"),
        ({"training": {"prompts": "query: "}}, "training.prompts is set from"),
        ({"training": {"eval_strategy": "steps"}}, "nothing to evaluate"),
        ({"training": {"save_strategy": "sometimes"}}, "not a valid SaveStrategy"),
        ({"loss": {"name": "InfoNCELoss", "kwargs": {"temprature": 0.1}}}, r"\['temprature'\] are not arguments"),
        ({"loss": {"name": "MultipleNegativesRankingLoss", "glofnd": {"alpha": 0.1}}}, "InfoNCE loss"),
        ({"loss": {"name": "InfoNCELoss", "matryoshka": {"weights": [1]}}}, "needs 'dims'"),
        (
            {"loss": {"name": "InfoNCELoss", "glofnd": {}, "matryoshka": {"dims": [8, 4]}}},
            "cannot wrap InfoNCELoss with",
        ),
        ({"loss": {"name": "GlobalContrastiveLoss", "matryoshka": {"dims": [8, 4]}}}, "per-sample state"),
        ({"adapters": {"lora": {"r": 0}}}, "adapters.lora.r must be positive"),
        ({"adapters": {"bitfit": {}, "lora": {}}}, "bitfit or lora"),
        ({"data": {"datasets": [{"name": "x", "path": "a", "max_rows": 0}]}}, r"data.datasets.0: .*max_rows"),
        (dataset(max_rows=True), r"data.datasets.0: .*max_rows must be an integer or null, got True \(bool\)"),
        (dataset(max_rows=1.5), r"max_rows must be an integer or null, got 1.5 \(float\)"),
        (dataset(num_negatives=True), r"num_negatives must be an integer or null, got True"),
        (dataset(weight="2"), r"weight must be a number or null, got '2' \(str\)"),
        (dataset(weight=True), r"weight must be a number or null, got True"),
        (dataset(query_prefix=5), r"query_prefix must be a string or null, got 5 \(int\)"),
        (dataset(columns="anchor"), r"columns must be a list of column names, .* got 'anchor' \(str\)"),
        (dataset(columns=["anchor", 3]), r"columns must be a list of column names"),
        (dataset(objective={"type": "self", "columns": "anchor"}), r"columns must be a list of column names"),
        (dataset(split=3), r"split must be a string, got 3"),
        (dataset(load_kwargs="x"), r"load_kwargs must be a mapping"),
        (dataset(shuffle_buffer=1.0), r"shuffle_buffer must be a positive integer, got 1.0"),
        ({"data": {"datasets": BASE["data"]["datasets"], "batch_sampler": "token_budget"}}, "needs data.max_tokens"),
        (
            {"monitoring": {"probe": {"path": "a.tsv", "maxrows": 64}}},
            r"monitoring.probe: .*unknown key\(s\) \['maxrows'\]",
        ),
        (
            {"monitoring": {"probe": {"path": "a.tsv", "max_rows": "64"}}},
            r"monitoring.probe: .*max_rows must be an integer",
        ),
        ({"monitoring": {"probe": {"max_rows": 64}}}, r"monitoring.probe: A dataset entry needs 'name' and 'path'"),
        (
            {
                "data": {
                    **TWO_DATASETS,
                    "batch_sampler": "token_budget",
                    "max_tokens": 300,
                    "single_dataset_batches": False,
                }
            },
            "token_budget batches one dataset at a time: with several datasets set data.single_dataset_batches: true",
        ),
        (
            {"data": {"datasets": [{**TWO_DATASETS["datasets"][0], "weight": 3}], "single_dataset_batches": False}},
            r"data.datasets \['a'\] set a weight, which only data.single_dataset_batches: true",
        ),
        ({"data": {**TWO_DATASETS, "max_tokens": 300}}, r"Only data.batch_sampler: token_budget uses data.max_tokens;"),
        (
            {"data": {**TWO_DATASETS, "batch_sampler": "batch_sampler", "no_duplicates": True}},
            r"uses data.no_duplicates; with 'batch_sampler' it is ignored",
        ),
        ({"loss": {"kwargs": {}}}, "loss.name is required"),
        ({"data": {"datasets": []}}, "at least one dataset"),
        ({"resume": "maybe"}, "resume must be"),
        ({"training": {"output_dir": "elsewhere"}}, "top level"),
        ({"output_dir": None}, "needs the section"),
    ],
)
def test_invalid_configurations_are_refused(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, {**BASE, **change}))


@pytest.mark.parametrize(
    "data",
    [
        {**TWO_DATASETS, "batch_sampler": "token_budget", "max_tokens": 300, "no_duplicates": False},
        {"datasets": [{"name": "a", "path": "a", "weight": 1}, {"name": "b", "path": "b", "weight": 2}]},
        {**dataset()["data"], "batch_sampler": "token_budget", "max_tokens": 300, "single_dataset_batches": False},
    ],
)
def test_data_combinations_that_run_are_accepted(tmp_path, data):
    assert load_config(write(tmp_path, {**BASE, "data": data})).data.datasets == data["datasets"]


def test_missing_or_invalid_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("model: [unclosed", encoding="utf8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")


def test_loss_classes_resolve_from_both_libraries_and_import_paths():
    assert resolve_loss_class("CachedInfoNCELoss") is CachedInfoNCELoss
    assert resolve_loss_class("MultipleNegativesRankingLoss") is MultipleNegativesRankingLoss
    assert resolve_loss_class("st_contrast.losses:SimCSELoss").__name__ == "SimCSELoss"
    with pytest.raises(ConfigError, match="Unknown loss 'InfoNCE'"):
        resolve_loss_class("InfoNCE")
    with pytest.raises(ConfigError, match="cannot be imported"):
        resolve_loss_class("no_such_module:Loss")


def test_build_model_packs_and_matches_stock(minilm_path):
    flash = build_model({"name_or_path": "minilm", "max_seq_length": 32})
    stock = build_model({"name_or_path": minilm_path, "packed": False, "max_seq_length": 32})
    assert isinstance(flash[0], FlashTransformer) and not isinstance(stock[0], FlashTransformer)
    assert type(flash[0]) is type(stock[0]) is Transformer
    assert flash.max_seq_length == 32
    sentences = ["A man plays a guitar on stage.", "Two dogs."]
    torch.testing.assert_close(flash.encode(sentences), stock.encode(sentences), atol=1e-5, rtol=1e-4)


def test_build_model_pooling_and_normalize(minilm_path):
    model = build_model({"name_or_path": minilm_path, "packed": False, "pooling": "cls", "normalize": True})
    reference = SentenceTransformer(minilm_path, device="cpu")
    tokens = reference.encode("A cat sits.", output_value="token_embeddings")
    expected = torch.nn.functional.normalize(tokens[0], dim=-1)
    torch.testing.assert_close(model.encode("A cat sits.", convert_to_tensor=True), expected, atol=1e-5, rtol=1e-4)


def test_build_loss_wires_glofnd_state_and_matryoshka(tiny_model_factory):
    model = SentenceTransformer(tiny_model_factory("bert"), device="cpu")
    section = {"name": "InfoNCELoss", "glofnd": {"alpha": 0.05}}
    assert LossSpec.from_dict(section).needs_sample_index
    assert LossSpec.from_dict({"name": "GlobalContrastiveLoss"}).needs_sample_index
    assert not LossSpec.from_dict({"name": "CachedInfoNCELoss"}).needs_sample_index
    loss = build_loss(model, section, num_samples=100)
    assert isinstance(loss, InfoNCELoss) and isinstance(loss.false_negative_detector, GloFND)
    assert loss.false_negative_detector.thresholds.shape == (100, 1)
    loss = build_loss(model, {"name": "CachedInfoNCELoss", "matryoshka": {"dims": [32, 16]}})
    assert isinstance(loss, MatryoshkaLoss) and isinstance(loss.loss, CachedInfoNCELoss)
    assert list(loss.matryoshka_dims) == [32, 16]
    assert isinstance(build_loss(model, {"name": "GlobalContrastiveLoss"}, 7), GlobalContrastiveLoss)
    assert build_loss(model, {"name": "GlobalContrastiveLoss"}, 7).num_samples == 7
    with pytest.raises(ConfigError, match="GlobalContrastiveLoss.*failed: gamma must be in"):
        build_loss(model, {"name": "GlobalContrastiveLoss", "kwargs": {"gamma": 2.0}}, 10)


def test_training_arguments_take_the_section_and_top_level_seed(tmp_path):
    args = build_training_arguments(str(tmp_path), {"max_steps": 5}, seed=3)
    assert args.max_steps == 5 and args.seed == 3 and args.report_to == []
    with pytest.raises(ConfigError, match="not a valid IntervalStrategy"):
        build_training_arguments(str(tmp_path), {"eval_strategy": "sometimes"})


def test_dataset_fallback_applies_only_when_the_local_path_is_missing(tmp_path):
    from st_contrast.training.run import _with_fallback

    fallback = {"path": "sentence-transformers/all-nli", "subset": "triplet", "split": "train"}
    missing = {"name": "nli", "path": str(tmp_path / "nope.tsv.gz"), "objective": "triplet", "fallback": fallback}
    assert _with_fallback(missing) == {"name": "nli", "objective": "triplet", **fallback}
    (tmp_path / "here.tsv").write_text("anchor\tpositive\tnegative\n", encoding="utf8")
    present = {**missing, "path": str(tmp_path / "here.tsv")}
    assert _with_fallback(present) == {"name": "nli", "path": str(tmp_path / "here.tsv"), "objective": "triplet"}


def test_build_model_makes_a_decoder_bidirectional(tiny_model_factory):
    from st_contrast.modules import is_bidirectional

    section = {"name_or_path": tiny_model_factory("llama"), "pooling": "lasttoken"}
    assert not is_bidirectional(build_model(section))
    assert is_bidirectional(build_model({**section, "bidirectional": True}))
    # Token 0's state (stock padded backbone, for token outputs) changes with a later word only when bidirectional.
    for bidirectional in (False, True):
        model = build_model({**section, "packed": False, "bidirectional": bidirectional})
        first = [model.encode(text, output_value="token_embeddings")[0] for text in ("a man runs", "a man sits")]
        assert torch.allclose(first[0], first[1]) is not bidirectional


def test_changed_keys_name_every_difference_by_its_dotted_path():
    from st_contrast.training.config import changed_keys

    before = {"seed": 1, "data": {"datasets": [{"name": "a", "max_rows": 5}]}, "training": {"max_steps": 4}}
    after = {"seed": 1, "data": {"datasets": [{"name": "a", "max_rows": 6}]}, "training": {}, "resume": True}
    assert changed_keys(before, after) == ["data.datasets.0.max_rows", "training.max_steps", "resume"]
    assert changed_keys(before, before) == []
    assert changed_keys({"a": [1, 2]}, {"a": [1]}) == ["a"]
