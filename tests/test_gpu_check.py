"""``bash benchmarks/gpu_check.sh`` in its CPU form: the CUDA parts skip with the reason, the others run at toy sizes.

It is also the small run of ``bench_backbone.py`` (MiniLM size and the attention op alone) and of ``bench_losses.py``
that CI keeps.

The GPU figures come from running it on a GPU (benchmarks/RESULTS.md); this keeps the one command working end to end on
a machine without CUDA, so that the GPU run is spent measuring, not debugging.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import env_for_shell_commands
from partial_report import PREFIX

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the full check runs for minutes: run it by hand")
def test_gpu_check_runs_end_to_end_on_cpu(tmp_path):
    env = env_for_shell_commands(OUT=str(tmp_path / "out"))  # the script runs `python`
    env.pop("PYTHONPATH", None)  # the script sets it itself
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "SKIP cuda_tests: no CUDA device" in done.stdout
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    parts = report["parts"]
    assert report["cuda"] is False
    assert list(parts) == [
        "cuda_tests", "attention", "backbone_bert_base", "mfu_bert_base", "profile_bert_base", "trainer_mfu", "losses",
        "compile_bert_base", "cudagraphs_bert_base", "backbone_minilm",
    ]  # fmt: skip
    skipped = {name for name, part in parts.items() if part["status"] == "skipped"}
    assert skipped == {"cuda_tests", "backbone_bert_base"}
    assert all(parts[name]["reason"] for name in skipped)
    assert all(part["status"] == "ok" for name, part in parts.items() if name not in skipped), parts

    backbone = parts["backbone_minilm"]["result"]
    assert backbone["flash_backend"] == "block_diagonal"
    for section in ("train", "encode"):
        assert backbone[section]["ratio"] > 0
        assert backbone[section]["flash"]["tokens_per_s"] > 0 and backbone[section]["stock"]["tokens_per_s"] > 0
    assert "flash_attn" in backbone["skipped"]["stock_unpad"] or "CUDA" in backbone["skipped"]["stock_unpad"]
    # --replay: every batch was seen once before it was timed, and that first sight is reported apart
    assert backbone["train"]["flash"]["first_sight_median_step_s"] > 0
    assert report["summary"]["minilm_train_first_sight_step_ratio"] > 0
    # Both backbones saw the same batches: the padded layout's padding is the same number for both.
    assert backbone["train"]["flash"]["padding_fraction"] == backbone["train"]["stock"]["padding_fraction"] > 0
    data_attention = backbone["attention"]["data"]  # the op at the data's lengths, the three ways
    assert min(data_attention[f"{way}_ms"] for way in ("packed", "padded_sdpa", "packed_sdpa")) > 0
    attention = parts["attention"]["result"]["attention"]
    for padding in (0.3, 0.45, 0.6):
        assert attention[f"padding_{padding:g}"]["padding_fraction"] == pytest.approx(padding, abs=0.01)
    # bench_losses, every measurement in one process as on the GPU: the same batch gives the same InfoNCE loss
    # whichever way it is computed, a loss well above zero (16 anchors of a random model), equal across the methods.
    assert parts["losses"]["result"]["in_process"] is True
    figures = parts["losses"]["result"]["batches"]["16"]
    for method in ("uncached", "cached", "stock_cached"):
        assert figures[method]["seconds"] > 0 and figures[method]["peak_mib"] >= 0
    assert figures["time_ratio_cached_vs_uncached"] > 0 and figures["time_ratio_cached_vs_stock_cached"] > 0
    losses = [figures[method]["loss"] for method in ("uncached", "cached", "stock_cached")]
    assert losses[0] > 0.1 and losses == pytest.approx([losses[0]] * 3, rel=1e-5, abs=1e-6)
    assert figures["loss_max_abs_difference"] == pytest.approx(max(losses) - min(losses))
    assert report["summary"]["minilm_train_packed_vs_stock"] > 0
    # st-contrast train's log (what the progress bar shows) has the throughput; MFU needs a GPU's known peak
    trainer_log = parts["trainer_mfu"]["result"]
    assert trainer_log["step"] == 2 and trainer_log["tokens_per_second"] > 0 and "mfu" not in trainer_log

    # profile_step: the step's time, launches and syncs (no device events on a CPU), the operator tables in the log
    profiled = parts["profile_bert_base"]["result"]
    assert profiled["variant"] == "flash" and profiled["unprofiled_step_s"] > 0 and profiled["real_tokens_per_step"] > 0
    assert profiled["device_busy_fraction"] is None and profiled["kernel_launches_per_step"] == 0
    table = (tmp_path / "out" / "gpu_results.md").read_text()
    assert "| measure | result | target |" in table and "CPU smoke form" in table
    compiled = parts["compile_bert_base"]["result"]  # traced as on the GPU; inductor's CPU code is test_compile's
    assert compiled["compile_backend"] == "aot_eager"
    assert compiled["train"]["compiled_vs_flash"] > 0 and compiled["train"]["flash_compiled"]["tokens_per_s"] > 0
    graphs = parts["cudagraphs_bert_base"]["result"]  # on a CPU: traced, no graphs
    assert graphs["compile_backend"] == "aot_eager" and graphs["train"]["cudagraphs_vs_merged"] > 0
    merged = parts["mfu_bert_base"]["result"]["train"]
    assert merged["merged_vs_flash"] > 0 and merged["flash_merged"]["tokens_per_s"] > 0
    assert merged["sdpa_vs_flash"] > 0 and merged["flash_sdpa"]["tokens_per_s"] > 0  # the padded attention kernel
    assert merged["block_diagonal_vs_flash"] > 0 and merged["flash_block_diagonal"]["tokens_per_s"] > 0
    assert "attention by the padded `sdpa` kernel" in table and "attention by the `block_diagonal` kernel" in table
    # the benchmarks also reported each section as it finished (kept if a part is stopped at its limit)
    log = (tmp_path / "out" / "gpu_check.log").read_text()
    partials = [json.loads(line.removeprefix(PREFIX)) for line in log.splitlines() if line.startswith(PREFIX)]
    assert [p for p in partials if "batches" in p][-1]["batches"] == parts["losses"]["result"]["batches"]
    assert any(partial.get("train") == backbone["train"] and "encode" not in partial for partial in partials)


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the part runs at full size: run it by hand")
def test_gpu_check_only_reruns_the_named_parts(tmp_path):
    """``--only`` (a rerun of the parts that failed, on a machine still warm) runs those parts and reports only them;
    a misspelt part is refused (exit 2) with the list of parts before anything is written, not skipped in silence."""
    command = ["python", str(ROOT / "benchmarks" / "gpu_check.py"), "--out", str(tmp_path)]
    env = env_for_shell_commands()
    done = subprocess.run([*command, "--only", "attention"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert list(report["parts"]) == ["attention"] and report["parts"]["attention"]["status"] == "ok"
    assert report["summary"]["attention_ratio_at_0.45"] > 0
    wrong_out = tmp_path / "wrong"
    wrong = subprocess.run(
        [*command[:-1], str(wrong_out), "--only", "atention"], capture_output=True, text=True, env=env, timeout=300
    )
    assert wrong.returncode == 2 and "unknown part(s) ['atention']" in wrong.stderr and "cuda_tests" in wrong.stderr
    assert not wrong_out.exists()  # refused before anything was written
