"""What ``gpu_check.sh`` does when a machine lacks something or a part breaks: carried wheels fill only the gaps, a
part whose needs are missing is skipped with the reason, and a part that fails keeps the figures it printed (the GPU
run is one short try; it must not be spent on a missing package or data folder, nor lose what it measured)."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

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
