"""Every GPU check in one command: the CUDA tests and the GPU benchmarks, each part guarded (``gpu_check.sh`` runs it).

Parts, in the order they run: the figures with targets first, then the compiled steps (whose first compile takes
longest), the MiniLM-size backbone (BERT-base's figures at a smaller size) last. Each runs in its own process group,
under its own time limit and the run's overall budget; a part that fails or runs out of time is logged with the
figures it had reported, its processes are stopped, and the next one starts:

- ``cuda_tests``: ``pytest -m cuda`` on the test files that have CUDA tests (kernels, bf16 parity of every packed
  architecture, rotary models in mixed precision, the compiled model as one graph, CUDA graphs under a cached loss);
- ``attention``: the attention op alone (forward + backward), packed kernel vs padded SDPA, at 30/45/60% padding,
  BERT-base heads, 128 sequences of up to 512 tokens (large enough that the kernels, not their launches, take the
  time; the backbone parts also time it at the data's lengths);
- ``backbone_bert_base``: ``bench_backbone.py`` on a random BERT-base-sized (768 wide, 12 layers) model: training
  step and encode, packed vs stock ST padded SDPA vs stock ST ``unpad_inputs`` (skipped with the reason where
  flash_attn is absent), bf16 weights. ``--replay``: each batch is timed the second time its variant sees it, the
  steady state of a long run (the stock model's cuDNN attention builds an execution plan for every new padded shape,
  about 20 ms of host time per attention call); the first sight is reported too;
- ``mfu_bert_base``: BERT-base packed training at the shared NLI/STS sentence lengths, a large batch: tokens/s and MFU,
  with one forward per column, with both columns in one forward (``flash_merged``, as st_contrast's losses run) and
  with the padded ``sdpa`` attention kernel inside the packed model (``flash_sdpa``: on ~15-token sentences the varlen
  kernel spends a whole tile per sequence) and with the ``block_diagonal`` kernel (``flash_block_diagonal``: several
  sequences per padded row of the attention);
- ``profile_bert_base``: ``profile_step.py`` on that step: the kernels' time against the step time (host-bound or
  device-bound), launches and host syncs per step, and the operators that take the time (in the log);
- ``trainer_mfu``: ``st-contrast train`` of the packed BERT-base-sized model in bf16 (fp32 weights, autocast) for a
  few steps: the run log (and so the progress bar) must carry ``tokens_per_second`` and, on a known GPU, ``mfu``;
- ``losses``: ``bench_losses.py``, CachedInfoNCELoss vs InfoNCELoss vs stock CachedMNRL at 1k, 4k and 16k triplets
  (step time, ``max_memory_allocated``), mini-batches of 1024 sequences, every measurement in one process (a fresh
  process per measurement spends seconds on imports there: with nine of them the part once ran out of time);
- ``compile_bert_base``: the packed BERT-base training step compiled (``FlashTransformer(compile=True)``) vs eager
  (on a CPU: the toy model, traced by dynamo and AOTAutograd as on the GPU but with the ``aot_eager`` backend, since
  inductor's C++ code generation takes a minute there and is tested by ``tests/test_compile.py``);
- ``cudagraphs_bert_base``: the packed BERT-base step with both columns in one forward, eager vs compiled with CUDA
  graphs (mode ``reduce-overhead``: packed shapes padded to buckets, graphs recorded once per bucket), each batch
  timed the second time it is seen: whether graphs lift a step of 256 pairs, which is host-bound on an H200 (on a
  CPU: traced with ``aot_eager``, no graphs);
- ``backbone_minilm``: ``bench_backbone.py`` on a random MiniLM-sized model (384 wide, 6 layers, heads of 32), as
  ``backbone_bert_base``.

A part that needs what the machine lacks is skipped with the reason: the random models need the shared data, the
trainer part needs ``datasets`` (the GPU machine has neither: ``gpu_prepare.sh`` packs both into ``.gpu_carry/``, with
all-MiniLM-L6-v2 in bf16 for the CUDA tests, and ``gpu_check.sh`` uses them). Without CUDA (a CPU machine, CI) the
CUDA-only parts are skipped with the reason and the others run at toy sizes, so every command line and report is
exercised before a GPU run: their figures are not measurements. Writes ``gpu_check.json`` (every part: status,
seconds, reason or result) and ``gpu_results.md`` (the table of
``benchmarks/RESULTS.md``'s GPU section, filled in) to ``--out``.

Usage::

    bash benchmarks/gpu_check.sh                # OUT=./gpu_results by default
    python benchmarks/gpu_check.py --out DIR --budget-s 450
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from partial_report import last_partial

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
CPU_PART_LIMIT_S = 300
"""Without CUDA the parts are toy-sized, but a CPU shared with other jobs can still be slow: a generous limit each."""


@dataclass
class Part:
    """One guarded step: its command for a GPU and for a CPU (None: skipped there, with ``cpu_skip`` as the reason)."""

    name: str
    gpu: list[str] | None
    cpu: list[str] | None
    cap_s: int
    cpu_skip: str = ""
    json_output: bool = True
    result_file: Path | None = None  # read this JSON-lines log for the result instead of the output
    needs_models: bool = True  # the random models (and so the shared data) of the set-up
    needs_packages: tuple[str, ...] = ()  # Python packages beyond the GPU machine's preinstalled stack


def cuda_test_files() -> list[str]:
    return sorted(
        str(path.relative_to(ROOT)) for path in (ROOT / "tests").glob("test_*.py") if "mark.cuda" in path.read_text()
    )


def trainer_config(directory: Path, model: str, cuda: bool) -> Path:
    """An ``st-contrast train`` config: the packed random model on NLI triplets, bf16 on a GPU, no MTEB evaluation."""
    import yaml
    from shared_data import find_data

    config = {
        "output_dir": str(directory / "trainer_run"),
        "model": {"name_or_path": model, "packed": True, "max_seq_length": 128, "pooling": "mean"},
        "loss": {"name": "InfoNCELoss"},
        "data": {"datasets": [{"name": "nli", "objective": "triplet", "max_rows": 6144 if cuda else 32,
                               "path": str(find_data() / "nli" / "derived" / "triplets.tsv.gz")}]},
        "training": {"per_device_train_batch_size": 256 if cuda else 8, "max_steps": 20 if cuda else 2,
                     "logging_steps": 5 if cuda else 1, "save_strategy": "no", "bf16": cuda, "use_cpu": not cuda,
                     "report_to": []},
        "evaluation": {"before": False, "after": False},
    }  # fmt: skip
    path = directory / "trainer_mfu.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf8")
    return path


def trainer_command(scratch: Path, model: str, cuda: bool) -> list[str]:
    try:
        config = str(trainer_config(scratch, model, cuda))
    except Exception as error:  # the part then fails with this in its log
        config = f"<no config: {type(error).__name__}: {error}>"
    return [sys.executable, "-m", "st_contrast.cli", "train", config]


def parts(models: dict[str, str], scratch: Path, cuda: bool) -> list[Part]:
    backbone = [sys.executable, str(BENCH / "bench_backbone.py")]
    losses = [sys.executable, str(BENCH / "bench_losses.py")]
    profile = [sys.executable, str(BENCH / "profile_step.py")]
    gpu_train = ["--batch-size=128", "--steps=10", "--warmup=3", "--encode-sentences=8192", "--max-seq-length=256",
                 "--replay"]  # fmt: skip
    cpu_train = ["--batch-size=8", "--steps=1", "--warmup=1", "--encode-sentences=32", "--max-seq-length=64",
                 "--replay"]  # fmt: skip
    attention = ["--config=bert", "--hidden-size=768", "--head-dim=64", "--sections", "attention"]
    pads = ["--attention-padding", "0.3", "0.45", "0.6"]
    mfu_variants = ["flash", "flash_merged", "flash_sdpa", "flash_block_diagonal"]
    no_cuda = "no CUDA device (torch.cuda.is_available() is False)"
    return [
        Part(
            "cuda_tests",
            [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-rs", "-p", "no:cacheprovider", *cuda_test_files()],
            None, 210, cpu_skip=no_cuda, json_output=False, needs_models=False,
        ),
        Part(
            "attention",
            [*backbone, *attention, *pads, "--attention-batch=128", "--attention-max-len=512",
             "--attention-repeats=30"],
            [*backbone, *attention, *pads, "--attention-batch=8", "--attention-max-len=32", "--attention-repeats=2"],
            60, needs_models=False,
        ),
        Part(
            "backbone_bert_base",
            [*backbone, f"--model={models['bert_base']}", *gpu_train],
            None, 150, cpu_skip="GPU sizes; without CUDA the same command runs once, as backbone_minilm",
        ),
        Part(
            "mfu_bert_base",
            [*backbone, f"--model={models['bert_base']}", "--variants", *mfu_variants, "--sections", "train",
             "--batch-size=1024", "--steps=8", "--warmup=3", "--max-seq-length=256"],
            [*backbone, f"--model={models['bert_base']}", "--variants", *mfu_variants, "--sections", "train",
             *cpu_train],
            150,
        ),
        Part(
            "profile_bert_base",
            [*profile, f"--model={models['bert_base']}", "--batch-size=1024", "--top=20"],
            [*profile, f"--model={models['bert_base']}", "--batch-size=8", "--steps=1", "--warmup=1", "--top=5"],
            90,
        ),
        Part(
            "trainer_mfu",
            trainer_command(scratch, models["bert_base"], cuda) if cuda else None,
            None if cuda else trainer_command(scratch, models["minilm"], cuda),
            150, result_file=scratch / "trainer_run" / "log.jsonl", needs_packages=("datasets",),
        ),
        Part(
            "losses",
            [*losses, f"--model={models['minilm']}", "--dtype=bf16", "--batch-sizes", "1024", "4096", "16384",
             "--mini-batch-size=1024", "--steps=2", "--warmup=1", "--in-process"],
            [*losses, f"--model={models['minilm']}", "--batch-sizes", "16", "--mini-batch-size=4", "--steps=1",
             "--warmup=0", "--in-process"],
            240,
        ),
        Part(
            "compile_bert_base",
            [*backbone, f"--model={models['bert_base']}", "--variants", "flash", "flash_compiled", "--sections",
             "train", "--batch-size=256", "--steps=8", "--warmup=3", "--max-seq-length=256"],
            [*backbone, f"--model={models['bert_base']}", "--variants", "flash", "flash_compiled", "--sections",
             "train", "--compile-backend=aot_eager", *cpu_train],
            240,
        ),
        Part(
            "cudagraphs_bert_base",
            [*backbone, f"--model={models['bert_base']}", "--variants", "flash_merged", "flash_merged_cudagraphs",
             "--sections", "train", "--batch-size=256", "--steps=8", "--warmup=3", "--max-seq-length=256", "--replay"],
            [*backbone, f"--model={models['bert_base']}", "--variants", "flash_merged", "flash_merged_cudagraphs",
             "--sections", "train", "--compile-backend=aot_eager", *cpu_train],
            150,
        ),
        Part(
            "backbone_minilm",
            [*backbone, f"--model={models['minilm']}", *gpu_train],
            [*backbone, f"--model={models['minilm']}", *cpu_train],
            120,
        ),
    ]  # fmt: skip


def selected(all_parts: list[Part], names: list[str] | None) -> list[Part]:
    """The parts named in ``names`` (all when None), in their usual order."""
    return all_parts if names is None else [part for part in all_parts if part.name in names]


def part_names(cuda: bool) -> list[str]:
    """The parts' names, in order (from placeholder models: nothing is run or kept)."""
    with tempfile.TemporaryDirectory() as scratch:
        return [part.name for part in parts({"bert_base": "", "minilm": ""}, Path(scratch), cuda)]


def write_models(directory: Path, cuda: bool) -> dict[str, str]:
    """Random BERT-base-sized and MiniLM-sized models (toy sizes without CUDA), written once for every part."""
    sys.path.insert(0, str(BENCH))
    from random_model import write_random_model

    sizes = {
        "bert_base": {"hidden_size": 768, "num_hidden_layers": 12, "head_dim": 64},
        "minilm": {"hidden_size": 384, "num_hidden_layers": 6, "head_dim": 32},
    }
    if not cuda:
        sizes = {name: {"hidden_size": 64, "num_hidden_layers": 2, "head_dim": 32} for name in sizes}
    return {name: write_random_model("bert", directory / name, **size) for name, size in sizes.items()}


def unmet_need(part: Part, setup_error: str) -> str:
    """Why ``part`` cannot run here, or "": the set-up (random models from the shared data) failed, or a package is
    missing (the GPU machine has only its preinstalled stack; benchmarks/gpu_prepare.sh packs the rest to carry)."""
    if part.needs_models and setup_error:
        return f"the set-up failed ({setup_error})"
    missing = [name for name in part.needs_packages if importlib.util.find_spec(name) is None]
    if missing:
        return (
            f"Python package {', '.join(missing)} not installed here: where pip works, run "
            "benchmarks/gpu_prepare.sh and carry .gpu_carry with the repository"
        )
    return ""


def run_part(part: Part, cuda: bool, budget_left: float, log, setup_error: str = "") -> dict:
    command = part.gpu if cuda else part.cpu
    reason = part.cpu_skip if command is None else unmet_need(part, setup_error)
    if reason:
        say(log, f"SKIP {part.name}: {reason}")
        return {"status": "skipped", "reason": reason}
    limit = min(part.cap_s if cuda else CPU_PART_LIMIT_S, budget_left)
    if limit < 20:
        reason = f"the run's time budget is spent ({budget_left:.0f} s left)"
        say(log, f"SKIP {part.name}: {reason}")
        return {"status": "skipped", "reason": reason}
    say(log, f"=== {part.name} (limit {limit:.0f} s): {' '.join(command)}")
    start = time.perf_counter()
    # A process group of its own: on a timeout the part's workers (bench_losses runs one per measurement) stop with it
    # instead of holding the GPU during the next part.
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):  # the whole group may have ended meanwhile
            os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        log.write(stdout or "")
        log.write(stderr or "")
        say(log, f"FAIL {part.name}: timed out after {limit:.0f} s")
        entry = {"status": "timeout", "seconds": round(time.perf_counter() - start, 1), "command": command}
        partial = last_partial(stderr or "") if part.json_output else None
        if partial is not None:  # what it measured before its limit still goes into the table
            entry["result"] = partial
        return entry
    done = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    seconds = round(time.perf_counter() - start, 1)
    log.write(done.stdout)
    log.write(done.stderr)
    entry = {"seconds": seconds, "command": command}
    if done.returncode != 0:
        tail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["no output"]
        say(log, f"FAIL {part.name} (exit {done.returncode}, {seconds} s): {tail[0]}")
        entry.update(status="failed", error=tail[0], output_tail=(done.stdout + done.stderr)[-3000:])
        report = (printed_report(done.stdout) or last_partial(done.stderr)) if part.json_output else None
        if report is not None:  # the figures that were measured before the failure still go into the table
            entry["result"] = report
        return entry
    if part.result_file is not None:  # the training log: its last line (tokens_per_second, mfu, ...)
        if not part.result_file.is_file():
            say(log, f"FAIL {part.name}: it wrote no {part.result_file.name}")
            return {**entry, "status": "failed", "error": f"no {part.result_file}"}
        entry["result"] = json.loads(part.result_file.read_text(encoding="utf8").strip().splitlines()[-1])
    elif part.json_output:
        entry["result"] = printed_report(done.stdout)
        if entry["result"] is None:
            say(log, f"FAIL {part.name}: it printed no JSON report")
            return {**entry, "status": "failed", "error": "no JSON report in its output"}
    else:
        entry["result"] = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    say(log, f"OK {part.name} ({seconds} s)")
    return {"status": "ok", **entry}


def printed_report(stdout: str) -> dict | None:
    """The JSON report a benchmark prints last (indented, so it starts at a line of its own ``{``), or None."""
    start = stdout.find("{\n")
    if start < 0:
        return None
    try:
        return json.loads(stdout[start:])
    except json.JSONDecodeError:
        return None


def say(log, message: str) -> None:
    print(message, flush=True)
    log.write(message + "\n")
    log.flush()


def summary(results: dict) -> dict:
    """The headline figures of ``benchmarks/RESULTS.md``'s GPU section, where their part ran."""

    def get(part: str, *keys: str):
        value = results.get(part, {}).get("result")
        for key in keys:
            if not isinstance(value, dict) or key not in value:
                return None
            value = value[key]
        return value

    out: dict = {}
    for model in ("bert_base", "minilm"):
        part = f"backbone_{model}"
        out[f"{model}_train_packed_vs_stock"] = get(part, "train", "ratio")
        out[f"{model}_encode_packed_vs_stock"] = get(part, "encode", "ratio")
        out[f"{model}_train_padding_fraction"] = get(part, "train", "stock", "padding_fraction")
        out[f"{model}_stock_unpad_skipped"] = get(part, "skipped", "stock_unpad")
        stock_first = get(part, "train", "stock", "first_sight_median_step_s")
        packed_first = get(part, "train", "flash", "first_sight_median_step_s")
        out[f"{model}_train_first_sight_step_ratio"] = (
            stock_first / packed_first if stock_first and packed_first else None
        )
    for padding in ("0.3", "0.45", "0.6"):
        out[f"attention_ratio_at_{padding}"] = get("attention", "attention", f"padding_{padding}", "ratio")
    out["data_attention_packed_vs_padded"] = get("backbone_bert_base", "attention", "data", "ratio")
    out["data_attention_sdpa_kernel_vs_packed"] = get(
        "backbone_bert_base", "attention", "data", "packed_sdpa_vs_packed"
    )
    out["data_attention_block_diagonal_vs_packed"] = get(
        "backbone_bert_base", "attention", "data", "block_diagonal_vs_packed"
    )
    out["bert_base_packed_mfu"] = get("mfu_bert_base", "train", "flash", "mfu")
    out["bert_base_packed_tokens_per_s"] = get("mfu_bert_base", "train", "flash", "tokens_per_s")
    out["bert_base_merged_mfu"] = get("mfu_bert_base", "train", "flash_merged", "mfu")
    out["bert_base_merged_vs_per_column"] = get("mfu_bert_base", "train", "merged_vs_flash")
    out["bert_base_sdpa_kernel_mfu"] = get("mfu_bert_base", "train", "flash_sdpa", "mfu")
    out["bert_base_sdpa_kernel_vs_varlen"] = get("mfu_bert_base", "train", "sdpa_vs_flash")
    out["bert_base_block_diagonal_mfu"] = get("mfu_bert_base", "train", "flash_block_diagonal", "mfu")
    out["bert_base_block_diagonal_vs_varlen"] = get("mfu_bert_base", "train", "block_diagonal_vs_flash")
    out["bert_base_device_busy_fraction"] = get("profile_bert_base", "device_busy_fraction")
    out["bert_base_kernel_launches_per_step"] = get("profile_bert_base", "kernel_launches_per_step")
    out["trainer_log_tokens_per_second"] = get("trainer_mfu", "tokens_per_second")
    out["trainer_log_mfu"] = get("trainer_mfu", "mfu")
    out["bert_base_compiled_mfu"] = get("compile_bert_base", "train", "flash_compiled", "mfu")
    out["bert_base_compiled_vs_eager"] = get("compile_bert_base", "train", "compiled_vs_flash")
    out["bert_base_cudagraphs_vs_eager"] = get("cudagraphs_bert_base", "train", "cudagraphs_vs_merged")
    for batch, figures in (get("losses", "batches") or {}).items():
        out[f"losses_{batch}_throughput_cached_vs_uncached"] = figures.get("throughput_ratio_cached_vs_uncached")
        out[f"losses_{batch}_cached_peak_mib"] = figures.get("cached", {}).get("peak_mib")
        out[f"losses_{batch}_uncached_peak_mib"] = figures.get("uncached", {}).get("peak_mib")
    return out


def markdown(report: dict) -> str:
    """``benchmarks/RESULTS.md``'s GPU table, filled in from this run."""

    def cell(value, digits: int = 2, unit: str = "") -> str:
        if value is None:
            return "n/a"
        return (f"{value:.{digits}f}" if isinstance(value, float) else str(value)) + unit

    def times(value) -> str:
        return cell(value, unit="x")

    figures = report["summary"]
    unpad_skipped = figures["bert_base_stock_unpad_skipped"] or figures["minilm_stock_unpad_skipped"]
    rows = [
        f"### {report['date']}, {report['device']}, torch {report['versions']['torch']}, transformers "
        f"{report['versions']['transformers']}, sentence-transformers {report['versions']['sentence_transformers']}",
        "",
        "`bash benchmarks/gpu_check.sh` (random BERT-base- and MiniLM-sized models, bf16)"
        + ("" if report["cuda"] else " - CPU smoke form: toy sizes, not measurements"),
        "",
        "| measure | result | target |",
        "|---|---:|---:|",
        f"| BERT-base training step, packed / stock padded SDPA, steady state (real tokens/s; padding "
        f"{cell(figures['bert_base_train_padding_fraction'])}) | {times(figures['bert_base_train_packed_vs_stock'])} "
        "| >= 2.0x |",
        f"| MiniLM-size training step, packed / stock | {times(figures['minilm_train_packed_vs_stock'])} | >= 2.0x |",
        "| the same at each batch's first sight (the stock model builds its cuDNN plans), stock / packed step time: "
        f"BERT-base, MiniLM-size | {times(figures['bert_base_train_first_sight_step_ratio'])}, "
        f"{times(figures['minilm_train_first_sight_step_ratio'])} | |",
        f"| BERT-base encode, packed / stock | {times(figures['bert_base_encode_packed_vs_stock'])} | |",
        f"| MiniLM-size encode, packed / stock | {times(figures['minilm_encode_packed_vs_stock'])} | |",
        f"| stock ST `unpad_inputs` | {unpad_skipped or 'measured (see JSON)'} | |",
    ]
    for padding in ("0.3", "0.45", "0.6"):
        target = ">= 3x" if padding == "0.45" else ""
        rows.append(
            f"| attention op alone at {float(padding):.0%} padding, packed / padded SDPA | "
            f"{times(figures[f'attention_ratio_at_{padding}'])} | {target} |"
        )
    rows.append(
        "| attention op at the data's lengths (BERT-base heads, a batch of the shared sentences), speed of the "
        "packed kernel / padded SDPA; of the `sdpa` kernel (padded regroup) / the packed kernel; of the "
        "`block_diagonal` kernel / the packed kernel | "
        f"{times(figures['data_attention_packed_vs_padded'])}; {times(figures['data_attention_sdpa_kernel_vs_packed'])}"
        f"; {times(figures['data_attention_block_diagonal_vs_packed'])} | |"
    )
    rows += [
        f"| BERT-base packed training MFU (bf16 weights), eager | {cell(figures['bert_base_packed_mfu'], 3)} | >= 0.40 "
        "(0.30 milestone) |",
        f"| BERT-base packed training MFU, both columns in one forward (st_contrast's losses) | "
        f"{cell(figures['bert_base_merged_mfu'], 3)} ({times(figures['bert_base_merged_vs_per_column'])} the tokens/s "
        "of one forward per column) | |",
        "| BERT-base packed training MFU, attention by the padded `sdpa` kernel (`attention_backend: sdpa`) | "
        f"{cell(figures['bert_base_sdpa_kernel_mfu'], 3)} ({times(figures['bert_base_sdpa_kernel_vs_varlen'])} the "
        "tokens/s of the default kernel) | |",
        "| BERT-base packed training MFU, attention by the `block_diagonal` kernel (sequences sharing padded rows) | "
        f"{cell(figures['bert_base_block_diagonal_mfu'], 3)} ({times(figures['bert_base_block_diagonal_vs_varlen'])} "
        "the tokens/s of the default kernel) | |",
        "| BERT-base packed step at 1024 pairs: kernels' time / step time (below 1: waiting on the host); kernel "
        f"launches per step | {cell(figures['bert_base_device_busy_fraction'])}; "
        f"{cell(figures['bert_base_kernel_launches_per_step'], 0)} | |",
        "| `st-contrast train` log (and progress bar), BERT-base `bf16: true` (fp32 weights, autocast): tokens/s, "
        f"MFU | "
        f"{cell(figures['trainer_log_tokens_per_second'], 0)}, {cell(figures['trainer_log_mfu'], 3)} | MFU shown |",
        f"| BERT-base packed training MFU, `compile=True` | {cell(figures['bert_base_compiled_mfu'], 3)} | |",
        f"| compiled / eager packed training step | {times(figures['bert_base_compiled_vs_eager'])} | > 1 |",
        "| BERT-base packed step, both columns in one forward, 256 pairs: CUDA graphs (`compile` mode reduce-overhead, "
        f"replayed shapes) / eager | {times(figures['bert_base_cudagraphs_vs_eager'])} | |",
    ]
    for key in sorted(k for k in figures if k.endswith("_throughput_cached_vs_uncached")):
        batch = key.split("_")[1]
        rows.append(
            f"| CachedInfoNCE / uncached throughput at {batch} triplets (peak MiB cached / uncached: "
            f"{cell(figures[f'losses_{batch}_cached_peak_mib'], 0)} / "
            f"{cell(figures[f'losses_{batch}_uncached_peak_mib'], 0)}) | {cell(figures[key])} | >= 0.72 |"
        )
    statuses = ", ".join(f"{name}: {part['status']}" for name, part in report["parts"].items())
    return "\n".join([*rows, "", f"Parts: {statuses}.", ""])


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("transformers", "sentence_transformers", "accelerate", "peft", "datasets", "flash_attn"):
        try:
            found[name] = version(name.replace("_", "-"))
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="gpu_results", help="where gpu_check.json, gpu_results.md and the log go")
    parser.add_argument(
        "--budget-s", type=float, default=None, help="time budget of all parts, s (450 on a GPU, 900 without)"
    )
    parser.add_argument(
        "--only", nargs="+", metavar="PART", help="run only these parts (a rerun of those that failed), in their order"
    )
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    unknown = sorted(set(args.only or ()) - set(part_names(cuda)))
    if unknown:  # before anything is written
        parser.error(f"--only: unknown part(s) {unknown}; the parts are {part_names(cuda)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    budget_s = args.budget_s or (450 if cuda else 900)
    start = time.perf_counter()
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": torch.cuda.get_device_name() if cuda else f"cpu ({torch.get_num_threads()} threads)",
        "cuda": cuda,
        "versions": versions(),
        "parts": {},
    }
    with (out / "gpu_check.log").open("a", encoding="utf8") as log, tempfile.TemporaryDirectory() as scratch:
        say(log, f"gpu_check {report['date']} on {report['device']}: {json.dumps(report['versions'])}")
        if not cuda:
            say(log, "No CUDA device: the CUDA-only parts are skipped, the others run at toy sizes (not measurements).")
        try:  # a failed set-up (no shared data, say) fails the parts that need it; the others still run
            models = write_models(Path(scratch), cuda)
        except Exception as error:  # reported, not raised
            say(log, f"FAIL set-up (random models): {type(error).__name__}: {error}")
            report["setup_error"] = f"{type(error).__name__}: {error}"
            models = {"bert_base": "<no model: set-up failed>", "minilm": "<no model: set-up failed>"}
        for part in selected(parts(models, Path(scratch), cuda), args.only):
            budget_left = budget_s - (time.perf_counter() - start)
            report["parts"][part.name] = run_part(part, cuda, budget_left, log, report.get("setup_error", ""))
            write_reports(out, report, start)  # after every part: a run stopped from outside keeps what it measured
        say(log, f"done in {report['seconds']} s: {out / 'gpu_check.json'}, {out / 'gpu_results.md'}")


def write_reports(out: Path, report: dict, start: float) -> None:
    """``gpu_check.json`` and ``gpu_results.md`` with the parts run so far."""
    report["summary"] = summary(report["parts"])
    report["seconds"] = round(time.perf_counter() - start, 1)
    for name, text in (("gpu_check.json", json.dumps(report, indent=2)), ("gpu_results.md", markdown(report))):
        staged = out / f".{name}.partial"
        staged.write_text(text, encoding="utf8")
        staged.replace(out / name)  # whole files only, even if the run is killed mid-write


if __name__ == "__main__":
    main()
