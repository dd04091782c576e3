"""The LLM2Vec chain (MNTP -> SimCSE -> supervised) and encoder MLM examples run end to end, tiny settings."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from in_process import run_script

ROOT = Path(__file__).resolve().parents[1]
SMALL = [
    "--set",
    "training.max_steps=2",
    "--set",
    "training.logging_steps=1",
    "--set",
    "training.per_device_train_batch_size=8",
]


def run(command: list[str]) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout


def example(script: str, output_dir: Path, *overrides: str, launcher: list[str] | None = None) -> str:
    """``python examples/SCRIPT`` small (in this process), or under ``launcher`` (a subprocess)."""
    sets = [item for override in overrides for item in ("--set", override)]
    args = [*SMALL, "--set", f"output_dir={output_dir}", *sets]
    if launcher is None:
        return run_script(ROOT / "examples" / script, *args, cwd=ROOT)
    return run([*launcher, str(ROOT / "examples" / script), *args])


@pytest.mark.slow
def test_llm2vec_recipe_chain(tmp_path):
    accelerate = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--cpu",
        "--num_processes=1",
        "--num_machines=1",
        "--mixed_precision=no",
        "--dynamo_backend=no",
    ]
    out = example("llm2vec_mntp.py", tmp_path / "mntp", "num_texts=64", launcher=accelerate)
    assert re.search(r"MNTP loss: first \d+\.\d+, last \d+\.\d+", out)
    mntp = tmp_path / "mntp" / "model"
    assert (mntp / "config.json").is_file() and '"is_causal": false' in (mntp / "config.json").read_text()

    out = example(
        "llm2vec_simcse.py", tmp_path / "simcse", f"model_name_or_path={mntp}", "num_texts=64", "stsb_pairs=40"
    )
    assert re.search(r"STS-B dev Spearman before: -?\d+\.\d\d", out) and "STS-B dev Spearman after" in out

    simcse = tmp_path / "simcse" / "model"
    out = example(
        "llm2vec_supervised.py",
        tmp_path / "sup",
        f"model_name_or_path={simcse}",
        "num_triplets=64",
        "stsb_pairs=40",
        "attention_backend=cpu",
    )
    assert "supervised loss: first" in out and (tmp_path / "sup" / "model" / "modules.json").is_file()

    import st_contrast
    from st_contrast.modules import BidirectionalFlashTransformer, is_bidirectional

    final = st_contrast.load_model(str(tmp_path / "sup" / "model"), device="cpu")
    assert isinstance(final[0], BidirectionalFlashTransformer) and is_bidirectional(final)


@pytest.mark.slow
def test_pretrain_mlm_example(tmp_path):
    out = example(
        "pretrain_mlm.py", tmp_path / "mlm", "num_texts=64", "lora={r: 4, alpha: 8, dropout: 0.0}", "save=both"
    )
    assert re.search(r"MLM loss: first \d+\.\d+, last \d+\.\d+", out)
    assert (tmp_path / "mlm" / "model" / "config.json").is_file()
    assert (tmp_path / "mlm" / "model" / "adapter" / "adapter_config.json").is_file()
