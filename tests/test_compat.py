"""Version compatibility checks agree with what the installed libraries really do."""

from __future__ import annotations

import json
from importlib import metadata

import pytest
import transformers.integrations.peft as transformers_peft
from packaging.version import Version
from peft import LoraConfig
from sentence_transformers import SentenceTransformer
from transformers import AutoModel

from st_contrast.adapters import add_lora
from st_contrast.cli.main import main
from st_contrast.compat import CompatibilityError, adapter_support_problem, transformers_min_peft_version


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
