"""Version compatibility checks agree with what the installed libraries really do, and every upstream hook
st_contrast relies on (st_contrast.compat.HOOKS) is still there."""

from __future__ import annotations

import ast
import json
from importlib import metadata
from pathlib import Path

import pytest
import torch
import transformers.integrations.peft as transformers_peft
from datasets import Dataset
from packaging.version import Version
from peft import LoraConfig
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Transformer
from sentence_transformers.sentence_transformer.losses import (
    CachedMultipleNegativesRankingLoss,
    MultipleNegativesRankingLoss,
)
from sentence_transformers.sentence_transformer.modules import Pooling
from transformers import AutoModel, DataCollatorWithFlattening, Trainer
from transformers.trainer_callback import ProgressCallback

import st_contrast
from st_contrast import compat
from st_contrast.adapters import add_lora
from st_contrast.cli.main import main
from st_contrast.compat import (
    CHECKED_ON,
    HOOKS,
    CompatibilityError,
    Hook,
    adapter_support_problem,
    hook_problem,
    transformers_min_peft_version,
)

ROOT = Path(__file__).resolve().parents[1]


def test_installed_pair_is_one_transformers_accepts(tiny_model_factory):
    """What `pip install -e .` resolved must pass transformers' own peft check, and the check must agree."""
    assert adapter_support_problem() is None
    assert (
        transformers_min_peft_version()
        == Version(transformers_peft.MIN_PEFT_VERSION)
        <= Version(metadata.version("peft"))
    )
    backbone = AutoModel.from_pretrained(tiny_model_factory("bert"))
    backbone.add_adapter(LoraConfig(r=2, target_modules=["query"]))  # transformers' integration, not ours
    assert backbone.active_adapters() == ["default"]


def test_a_floor_above_the_installed_peft_is_reported_and_refused(monkeypatch, minilm_path, capsys):
    monkeypatch.setattr(transformers_peft, "MIN_PEFT_VERSION", "99.0.0")
    problem = adapter_support_problem()
    assert problem is not None and "peft >= 99.0.0" in problem and metadata.version("peft") in problem
    assert "pip install" in problem

    backbone = AutoModel.from_pretrained(minilm_path)
    with pytest.raises(ValueError, match="99.0.0"):  # transformers itself refuses the pair: the check is right
        backbone.add_adapter(LoraConfig(r=2, target_modules=["query"]))
    with pytest.raises(CompatibilityError, match="peft >= 99.0.0"):  # ours says so before touching the model
        add_lora(SentenceTransformer(minilm_path, device="cpu"), "encoder")

    assert main(["info"]) == 1
    out, err = capsys.readouterr()
    assert "BROKEN COMBINATION" in err and "99.0.0" in json.loads(out)["lora_adapters"]


def test_info_lists_versions_and_a_working_pair(capsys):
    assert main(["info"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["transformers"] == metadata.version("transformers")
    assert report["peft"] == metadata.version("peft")
    assert report["lora_adapters"] == "available"
    try:
        import timm  # noqa: F401

        assert report["timm_towers"] == "available" and report["timm"] == metadata.version("timm")
    except Exception as error:  # noqa: BLE001 - a torchvision built for another torch fails with a RuntimeError
        assert (
            report["timm_towers"].startswith("A timm vision tower needs timm") and repr(error) in report["timm_towers"]
        )


# --- Upstream hooks (st_contrast/compat/) ----------------------------------------------------------------------------


@pytest.mark.parametrize("hook", HOOKS, ids=lambda hook: hook.name)
def test_upstream_hook_is_still_there(hook):
    """Each private hook st_contrast relies on exists in the installed release, with the parameters it uses."""
    problem = hook_problem(hook)
    assert problem is None, problem


def test_a_changed_or_removed_hook_is_named_with_the_versions(monkeypatch):
    save_checkpoint = next(hook for hook in HOOKS if hook.attribute == "_save_checkpoint")
    monkeypatch.setattr(Trainer, "_save_checkpoint", lambda self, model, trial, metrics: None)
    problem = hook_problem(save_checkpoint)
    assert problem.startswith(
        "st_contrast relies on transformers.Trainer._save_checkpoint(model, trial) (override: "
    ), problem
    assert "checked on transformers 5.7.0-5.23.0" in problem
    assert f"transformers {metadata.version('transformers')} removed or changed it" in problem
    assert "(model, trial, metrics)" in problem and "st_contrast/compat/" in problem
    assert "st_contrast/training/trainer.py" in problem and "tests/test_training_resume.py" in problem

    forward_flattened = next(hook for hook in HOOKS if hook.attribute == "_forward_flattened")
    monkeypatch.delattr(Pooling, "_forward_flattened")
    assert "Pooling._forward_flattened(token_embeddings, features)" in hook_problem(forward_flattened)
    assert "it is gone" in hook_problem(forward_flattened)

    a_new_required_parameter = next(hook for hook in HOOKS if hook.attribute == "_get_prompt_length")
    monkeypatch.setattr(Transformer, "_get_prompt_length", lambda self, prompt, task: 0)
    assert "its parameters are now (prompt, task)" in hook_problem(a_new_required_parameter)

    renamed = Hook(
        "sentence-transformers", "sentence_transformers.base.modules:Transformer", "_renamed_away", "attribute", "x"
    )
    assert "sentence_transformers.base.modules.Transformer._renamed_away" in hook_problem(renamed)
    assert "neither it nor its source has it any more" in hook_problem(renamed)


def test_registry_points_at_real_files():
    root = Path(__file__).resolve().parents[1]
    for hook in HOOKS:
        assert hook.library in CHECKED_ON and hook.kind in ("override", "method", "function", "attribute", "constant")
        for path in (*hook.used_in, *hook.covered_by):
            assert (root / path).is_file(), f"{hook.name}: {path} does not exist"


def test_private_hooks_are_reached_only_through_compat():
    """Outside st_contrast/compat/, st_contrast names no private hook of the registry (overridden methods excepted)."""
    private = {h.attribute for h in HOOKS if h.attribute.startswith("_") and not h.attribute.startswith("__")}
    private -= {h.attribute for h in HOOKS if h.kind == "override"}
    package = Path(st_contrast.__file__).parent
    found = []
    for path in sorted(package.rglob("*.py")):
        if path.parent == package / "compat":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [node.attr] if isinstance(node, ast.Attribute) else []
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("getattr", "hasattr", "setattr"):
                names += [arg.value for arg in node.args[1:2] if isinstance(arg, ast.Constant)]
            found += [f"{path.relative_to(package.parent)}:{node.lineno} {name}" for name in names if name in private]
    assert found == [], "use the st_contrast.compat function instead: " + ", ".join(found)


def test_sentence_transformers_flattens_what_compat_switches_on(minilm_path):
    """ST's own flattened text path, switched on without flash_attn, packs a batch and switches off again."""
    module = Transformer(minilm_path)
    texts = ["A man is playing a guitar.", "Two dogs."]
    assert not compat.should_flatten_inputs(module, "text", {"text": texts})
    before = compat.forward_params(module)
    collator = DataCollatorWithFlattening(return_seq_idx=True, return_flash_attn_kwargs=True, return_position_ids=True)
    compat.flatten_inputs(module, collator, {"cu_seq_lens_q", "max_length_q"})
    assert compat.flattens_inputs(module) and compat.should_flatten_inputs(module, "text", {"text": texts})
    assert compat.flatten_position_offset(module) == 0  # BERT; RoBERTa offsets: tests/test_flash_transformer.py
    assert before is None or {"cu_seq_lens_q", "max_length_q"} <= compat.forward_params(module)
    lengths = [len(ids) for ids in module.tokenizer(texts)["input_ids"]]
    packed = module.preprocess(texts)
    assert packed["input_ids"].shape == (1, sum(lengths))
    assert packed["cu_seq_lens_q"].tolist() == [0, lengths[0], sum(lengths)]
    assert packed["position_ids"][0].tolist() == [*range(lengths[0]), *range(lengths[1])]

    compat.restore_padded_inputs(module, before)
    assert not compat.flattens_inputs(module) and compat.forward_params(module) == before
    assert module.preprocess(texts)["input_ids"].shape == (2, max(lengths))


def test_pooling_internals_pool_flattened_rows_from_their_own_first_token(minilm_path):
    pooling = Pooling(4, pooling_mode=("mean", "weightedmean"))
    embeddings = torch.randn(5, 4)
    rows = (embeddings[:3], embeddings[3:])
    weighted = [(row * torch.arange(1.0, len(row) + 1)[:, None]).sum(0) / sum(range(1, len(row) + 1)) for row in rows]
    mean, weightedmean = compat.pool_flattened(pooling, embeddings[None], {"cu_seq_lens_q": torch.tensor([0, 3, 5])})
    torch.testing.assert_close(mean, torch.stack([row.mean(0) for row in rows]))
    torch.testing.assert_close(weightedmean, torch.stack(weighted))

    module = Transformer(minilm_path)
    prompt = "query: "
    assert compat.prompt_length(module, prompt) == len(module.tokenizer(prompt)["input_ids"]) - 1  # no [SEP]
    assert module._prompt_length_mapping
    compat.clear_prompt_lengths(module)
    assert module._prompt_length_mapping == {}
    assert compat.attn_implementation(module.model.config) in ("eager", "sdpa")


def test_cached_mnrl_reads_its_hyperparameters_from_the_wrapped_loss_at_scoring_time(minilm_path):
    """CachedInfoNCELoss swaps the wrapped loss, and InfoNCELoss's learned scale is read on every call."""
    model = SentenceTransformer(minilm_path, device="cpu")
    cached = CachedMultipleNegativesRankingLoss(model)
    assert isinstance(cached.loss, MultipleNegativesRankingLoss)
    cached.loss.scale = 7.0
    assert cached.scale == 7.0
    embeddings = [torch.nn.functional.normalize(torch.randn(4, 8), dim=-1) for _ in range(2)]
    at_7 = cached.loss.compute_loss_from_embeddings(embeddings, None)
    cached.loss.scale = 20.0
    assert not torch.allclose(at_7, cached.loss.compute_loss_from_embeddings(embeddings, None))


def test_small_hooks_answer_without_side_effects():
    assert compat.accelerate_state_exists() in (True, False)
    assert isinstance(compat.dataset_fingerprint(Dataset.from_dict({"text": ["a", "b"]})), str)
    assert compat.dataset_fingerprint(["not", "a", "dataset"]) is None
    assert compat.training_progress_bar(ProgressCallback()) is None
    assert compat.training_progress_bar(None) is None
    assert {"batch_sampler", "base_dataloader"} <= set(compat.SAMPLER_WRAPPER_ATTRIBUTES)
    buffers = torch.nn.BatchNorm1d(2)
    buffers.register_buffer("scratch", torch.zeros(1), persistent=False)
    assert compat.is_persistent_buffer(buffers, "running_mean") and not compat.is_persistent_buffer(buffers, "scratch")


def _lower_bounds() -> dict[str, Version]:
    """``{distribution: lower bound}`` of setup.cfg's install_requires and its ``s3`` extra."""
    import configparser

    from packaging.requirements import Requirement

    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg", encoding="utf8")
    lines = config["options"]["install_requires"].split("\n") + config["options.extras_require"]["s3"].split("\n")
    bounds = {}
    for line in filter(None, (line.strip() for line in lines)):
        requirement = Requirement(line)
        bounds[requirement.name.lower()] = next(Version(s.version) for s in requirement.specifier if s.operator == ">=")
    return bounds


def _pins(name: str) -> dict[str, Version]:
    pins = {}
    for line in (ROOT / ".ci" / name).read_text(encoding="utf8").splitlines():
        if line.strip() and not line.startswith("#"):
            package, _, version = line.partition("==")
            pins[package.strip().lower()] = Version(version)
    return pins


def test_every_lower_bound_is_a_release_the_floor_runs_install():
    """`.ci/floors` runs the suite on .ci/floors.txt (and .ci/gpu-stack.txt): each lower bound of setup.cfg must be
    the oldest release those runs pin, so a bound cannot move without the run that backs it."""
    floors, gpu_stack = _pins("floors.txt"), _pins("gpu-stack.txt")
    bounds = _lower_bounds()
    assert set(bounds) <= set(floors), f"not pinned in .ci/floors.txt: {sorted(set(bounds) - set(floors))}"
    for package, bound in bounds.items():
        tested = min(version for version in (floors[package], gpu_stack.get(package)) if version is not None)
        assert tested == bound, f"{package}: setup.cfg allows >= {bound}, the floor runs install {tested}"


def test_a_checkpoint_loads_onto_an_indexed_cpu_device(tmp_path):
    """transformers 5.17 resumes a multi-process CPU run with ``map_location=args.device`` (``cpu:<rank>``), which torch
    alone refuses; after accept_indexed_cpu_locations the optimizer state loads as saved."""
    state = {"state": {0: {"exp_avg": torch.randn(3), "step": torch.tensor(7.0)}}, "param_groups": [{"lr": 0.1}]}
    torch.save(state, tmp_path / "optimizer.pt")
    compat.accept_indexed_cpu_locations()
    loaded = torch.load(tmp_path / "optimizer.pt", map_location=torch.device("cpu", 1), weights_only=True)
    torch.testing.assert_close(loaded["state"][0]["exp_avg"], state["state"][0]["exp_avg"])
    assert loaded["state"][0]["exp_avg"].device.type == "cpu" and loaded["param_groups"] == [{"lr": 0.1}]
