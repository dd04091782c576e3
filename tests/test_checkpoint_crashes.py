"""A run SIGKILLed at any file boundary inside checkpoint writing resumes from a complete checkpoint and ends with the
weights and GloFND state of an uninterrupted run (``save_total_limit=1``, so rotation is inside the window too).

Each run is a forked child of the test process (imports are shared, so a run takes seconds). The child instruments
every file operation under its run directory — ``torch.save`` and safetensors writes (before, half-written, after),
and through an audit hook every ``open`` for writing, rename and tree removal — and, at the chosen boundary of the
second checkpoint's save, kills itself with SIGKILL. Then a second child reruns the same configuration.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest
import torch
import yaml
from test_cli_train import read_rows, write_tsv

from st_contrast.training.checkpoints import MANIFEST_NAME, STAGING_DIR

STEPS, SAVE_EVERY = 6, 2
WATCHED = ("checkpoint-4", "deleting-checkpoint-2")  # the second save: staging, commit, rotating checkpoint-2 out
FULL = os.environ.get("ST_CONTRAST_FULL_CRASH_TEST") == "1"

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def config(tmp_path: Path, model: str, data: str, output_dir: Path, save_total_limit: int = 1) -> str:
    values = {
        "output_dir": str(output_dir),
        "seed": 3,
        "model": {"name_or_path": model, "max_seq_length": 32},
        "loss": {"name": "InfoNCELoss", "glofnd": {"alpha": 0.2, "start_step": 1, "lr": 0.2}},
        "data": {"datasets": [{"name": "nli", "path": data, "objective": "triplet"}], "batch_sampler": "batch_sampler"},
        "training": {
            "per_device_train_batch_size": 4,
            "max_steps": STEPS,
            "learning_rate": 1e-3,
            "save_steps": SAVE_EVERY,
            "save_total_limit": save_total_limit,
            "use_cpu": True,
            "dataloader_drop_last": True,
            "logging_steps": 1,
        },
        "monitoring": {"enabled": False},
    }
    path = tmp_path / f"{output_dir.name}.yaml"
    path.write_text(yaml.safe_dump(values), encoding="utf8")
    return str(path)


def instrument(run_dir: str, kill_at: int | None, record: Path, watched: tuple[str, ...] = WATCHED) -> None:
    """In the child: number every watched file boundary; SIGKILL at ``kill_at`` (record them all when None)."""
    import safetensors.torch
    import transformers.modeling_utils

    seen: list[str] = []

    def boundary(what: str, path: str) -> None:
        if not (path.startswith(run_dir) and any(name in path for name in watched)):
            return
        seen.append(f"{what} {path.replace(run_dir + os.sep, '')}")
        if kill_at is None:
            record.write_text(json.dumps(seen))
        elif len(seen) - 1 == kill_at:
            if what == "partial" and os.path.isfile(path):  # a file path, not a rename
                os.truncate(path, os.path.getsize(path) // 2)  # the kill lands halfway through this file
            os.kill(os.getpid(), signal.SIGKILL)

    def wrap(function, position: int):
        def instrumented(*args, **kwargs):
            target = args[position] if len(args) > position else kwargs.get("f") or kwargs.get("filename")
            target = str(target) if isinstance(target, str | os.PathLike) else ""
            boundary("before", target)
            result = function(*args, **kwargs)
            boundary("partial", target)
            boundary("after", target)
            return result

        return instrumented

    torch.save = wrap(torch.save, 1)
    safetensors.torch.save_file = wrap(safetensors.torch.save_file, 1)
    if hasattr(transformers.modeling_utils, "safe_save_file"):
        transformers.modeling_utils.safe_save_file = wrap(transformers.modeling_utils.safe_save_file, 1)

    def audit(event: str, args: tuple) -> None:
        if event == "open" and isinstance(args[0], str) and isinstance(args[1], str) and set(args[1]) & set("wax"):
            boundary("open", args[0])
        elif event in ("os.rename", "os.replace"):
            boundary("rename", f"{args[0]} -> {args[1]}")
        elif event == "shutil.rmtree":
            boundary("rmtree", str(args[0]))

    sys.addaudithook(audit)


def run_child(
    config_path: str,
    run_dir: Path,
    kill_at: int | None = None,
    record: Path | None = None,
    watched: tuple[str, ...] = WATCHED,
) -> int:
    """Fork; the child trains from ``config_path`` (instrumented when ``kill_at`` or ``record`` is set)."""
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            torch.set_num_threads(1)  # OpenMP's pool does not survive fork: keep the child out of it

            if kill_at is not None or record is not None:
                instrument(str(run_dir), kill_at, record or Path(os.devnull), watched)
            from st_contrast.cli import main

            code = main(["train", config_path])
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def final_state(run_dir: Path) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    weights = load_file(str(run_dir / "model" / "model.safetensors"))
    loss_state = torch.load(run_dir / f"checkpoint-{STEPS}" / "loss_state.pt", weights_only=True)
    return torch.cat([weights[name].flatten() for name in sorted(weights)]), loss_state


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model_factory, shared_data):
    """An uninterrupted run, recording the boundaries of its second checkpoint's save."""
    root = tmp_path_factory.mktemp("crashes")
    model = tiny_model_factory("bert")
    data = write_tsv(root / "nli.tsv", read_rows(shared_data / "nli" / "derived" / "triplets.tsv.gz", 32))
    run_dir = root / "reference"
    assert run_child(config(root, model, data, run_dir), run_dir, record=root / "boundaries.json") == 0
    boundaries = json.loads((root / "boundaries.json").read_text())
    return {"model": model, "data": data, "run_dir": run_dir, "boundaries": boundaries, "state": final_state(run_dir)}


def assert_same_final_state(run_dir: Path, reference: dict, context: str) -> None:
    weights, loss_state = final_state(run_dir)
    expected_weights, expected_loss = reference["state"]
    torch.testing.assert_close(weights, expected_weights, atol=1e-6, rtol=1e-5, msg=context)
    assert loss_state.keys() == expected_loss.keys()
    for name, value in expected_loss.items():
        torch.testing.assert_close(loss_state[name], value, atol=1e-6, rtol=1e-5, msg=f"{context}: {name}")


@pytest.mark.slow
def test_sigkill_at_every_boundary_of_checkpoint_writing_loses_nothing(tmp_path, reference):
    boundaries = reference["boundaries"]
    kinds = {entry.split()[0] for entry in boundaries}
    assert {"before", "partial", "after", "open", "rename", "rmtree"} <= kinds, boundaries
    assert sorted(p.name for p in reference["run_dir"].glob("checkpoint-*")) == [f"checkpoint-{STEPS}"]

    # CI runs a spread of the boundaries (first, last, renames, removals, every few); the full run takes all of them.
    points = range(len(boundaries))
    if not FULL:
        wanted = {0, len(boundaries) - 1, *range(0, len(boundaries), 7)}
        wanted |= {i for i, entry in enumerate(boundaries) if entry.startswith(("rename", "rmtree"))}
        points = sorted(wanted)
    for point in points:
        run_dir = tmp_path / f"killed-{point}"
        path = config(tmp_path, reference["model"], reference["data"], run_dir)
        assert run_child(path, run_dir, kill_at=point) == -signal.SIGKILL, f"no kill at {boundaries[point]}"
        assert list(run_dir.glob("checkpoint-*")), f"no checkpoint left after a kill at {boundaries[point]}"
        assert run_child(path, run_dir) == 0, f"rerun after a kill at {boundaries[point]} failed"
        assert_same_final_state(run_dir, reference, boundaries[point])
        assert not (run_dir / ".staging").exists() or not any((run_dir / ".staging").iterdir())


@pytest.mark.slow
def test_a_damaged_newest_checkpoint_is_skipped_for_the_intact_previous_one(tmp_path, reference, capfd):
    """A truncated model.safetensors in checkpoint-4 (disk trouble after the fact): resume from checkpoint-2."""
    run_dir = tmp_path / "run"
    path = config(tmp_path, reference["model"], reference["data"], run_dir, save_total_limit=2)
    # killed as the step-6 checkpoint starts: checkpoint-2 and checkpoint-4 are complete
    assert run_child(path, run_dir, kill_at=0, watched=("checkpoint-6",)) == -signal.SIGKILL
    assert sorted(p.name for p in run_dir.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    weights = run_dir / "checkpoint-4" / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 3)
    capfd.readouterr()
    assert run_child(path, run_dir) == 0
    err = capfd.readouterr().err
    assert f"skipping the damaged checkpoint {run_dir / 'checkpoint-4'}: model.safetensors is" in err
    assert f"resuming from {run_dir / 'checkpoint-2'}, step 2 of {STEPS}" in err
    assert_same_final_state(run_dir, reference, "resumed from checkpoint-2")


@pytest.mark.slow
def test_a_finished_run_is_not_trained_again(tmp_path, reference, capfd):
    run_dir = tmp_path / "finished"
    shutil.copytree(reference["run_dir"], run_dir)
    path = config(tmp_path, reference["model"], reference["data"], run_dir)
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")}
    capfd.readouterr()
    assert run_child(path, run_dir) == 0
    assert "holds a finished run" in capfd.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")} == before, "a finished run was touched"
    assert not (run_dir / f"checkpoint-{STEPS + 1}").exists()

    pid = os.fork()
    if pid == 0:
        torch.set_num_threads(1)
        from st_contrast.cli import main

        os._exit(main(["train", path, "--restart"]))
    assert os.waitpid(pid, 0)[1] == 0
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")} != before, "--restart did not train again"
    assert_same_final_state(run_dir, reference, "--restart")


@pytest.mark.slow
def test_a_checkpoint_complete_in_staging_when_killed_is_recovered(tmp_path, reference, capfd):
    """Killed after checkpoint-4's last write, as it was to replace a damaged same-step leftover: the old one is gone,
    the new one complete in staging. The rerun moves it into place and resumes there, not from checkpoint-2."""
    run_dir = tmp_path / "run"
    path = config(tmp_path, reference["model"], reference["data"], run_dir, save_total_limit=2)
    assert run_child(path, run_dir, kill_at=0, watched=("checkpoint-6",)) == -signal.SIGKILL
    weights = run_dir / "checkpoint-4" / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 3)
    staged_rename = f"{os.path.join(STAGING_DIR, 'checkpoint-4')} -> "
    assert run_child(path, run_dir, kill_at=0, watched=(staged_rename,)) == -signal.SIGKILL  # resumed at 2, killed at 4
    assert not (run_dir / "checkpoint-4").exists()
    assert (run_dir / STAGING_DIR / "checkpoint-4" / MANIFEST_NAME).is_file()
    capfd.readouterr()
    assert run_child(path, run_dir) == 0
    err = capfd.readouterr().err
    assert f"recovered {run_dir / 'checkpoint-4'}: complete in {STAGING_DIR}" in err
    assert f"resuming from {run_dir / 'checkpoint-4'}, step 4 of {STEPS}" in err
    assert_same_final_state(run_dir, reference, "recovered from staging")
    assert not (run_dir / STAGING_DIR).exists() or not any((run_dir / STAGING_DIR).iterdir())
