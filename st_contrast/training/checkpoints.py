"""Crash-safe checkpoints: staged, checked, renamed into place; rotation and resume see complete ones only.

A checkpoint is written into ``<run>/.staging/checkpoint-N`` (model, optimizer, scheduler, RNG, trainer state, loss
state), listed with every file's size in ``checkpoint_manifest.json``, flushed to disk, and only then renamed to
``<run>/checkpoint-N``: a process killed at any point leaves either the previous checkpoints untouched or the new one
complete. A run killed after the manifest was written but before the rename (or while a same-step leftover was
being replaced) left a complete checkpoint in staging: the next run moves it into place (:func:`recover_staging`)
instead of discarding it. Old checkpoints are removed after the new one is in place, each by a rename out of the run
directory followed by the deletion, so a half-deleted checkpoint is never left where resume looks.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import struct
import zipfile
from pathlib import Path

__all__ = [
    "MANIFEST_NAME",
    "STAGING_DIR",
    "CheckpointChoice",
    "checkpoint_problem",
    "commit_checkpoint",
    "newest_complete_checkpoint",
    "recover_staging",
    "remove_checkpoint",
    "rotate_checkpoints",
    "write_manifest",
]

logger = logging.getLogger(__name__)

STAGING_DIR = ".staging"
MANIFEST_NAME = "checkpoint_manifest.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_TORCH_ARCHIVES = (".pt", ".pth", ".bin")


def write_manifest(folder: str | os.PathLike, step: int) -> None:
    """List every file of a staged checkpoint with its size, after flushing each one to disk."""
    folder = Path(folder)
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST_NAME):
        _fsync(path)
        files[str(path.relative_to(folder))] = path.stat().st_size
    manifest = folder / MANIFEST_NAME
    manifest.write_text(json.dumps({"step": step, "files": files}, indent=1), encoding="utf8")
    _fsync(manifest)


def commit_checkpoint(staged: str | os.PathLike, final: str | os.PathLike) -> None:
    """Rename a complete staged checkpoint into place (replacing a same-step leftover), durably."""
    staged, final = Path(staged), Path(final)
    _fsync(staged)
    if final.exists():
        remove_checkpoint(final)
    os.replace(staged, final)
    _fsync(final.parent)


def remove_checkpoint(folder: str | os.PathLike) -> None:
    """Delete a checkpoint: renamed out of the run directory first, so no half-deleted one is left behind."""
    folder = Path(folder)
    trash = folder.parent / STAGING_DIR / f"deleting-{folder.name}"
    trash.parent.mkdir(exist_ok=True)
    if trash.exists():
        shutil.rmtree(trash)
    os.replace(folder, trash)
    shutil.rmtree(trash)


def rotate_checkpoints(run_dir: str | os.PathLike, save_total_limit: int | None, protected: set[str]) -> None:
    """Remove the oldest checkpoints (by step) beyond ``save_total_limit``, never one in ``protected``."""
    if not save_total_limit or save_total_limit <= 0:
        return
    found = sorted(
        (int(match.group(1)), path)
        for path in Path(run_dir).iterdir()
        if path.is_dir() and (match := _CHECKPOINT.match(path.name))
    )
    protected = {str(Path(path)) for path in protected}
    remaining = len(found)
    for _, path in found:
        if remaining <= max(save_total_limit, len(protected)):
            break
        if str(path) not in protected:
            remove_checkpoint(path)
            remaining -= 1


def recover_staging(run_dir: str | os.PathLike) -> list[str]:
    """Empty the staging area a killed run left: a staged checkpoint with its manifest is complete (the manifest is
    written last) and moves into place when no checkpoint of its step is there; everything else there is removed.
    Returns the checkpoints moved into place. Call it from one process, before any process looks for checkpoints."""
    run_dir = Path(run_dir)
    staging = run_dir / STAGING_DIR
    if not staging.is_dir():
        return []
    recovered = []
    for staged in sorted(staging.iterdir()):
        final = run_dir / staged.name
        if not (_CHECKPOINT.match(staged.name) and staged.is_dir() and (staged / MANIFEST_NAME).is_file()):
            continue
        if final.exists() or checkpoint_problem(staged) is not None:
            continue
        os.replace(staged, final)
        _fsync(run_dir)
        logger.warning("Recovered %s: it was complete in %s when the run stopped.", final, STAGING_DIR)
        recovered.append(str(final))
    shutil.rmtree(staging)
    return recovered


def checkpoint_problem(folder: str | os.PathLike) -> str | None:
    """Why ``folder`` is not a complete, readable checkpoint, or None.

    Checks the manifest (every listed file present with its size), the trainer state (valid JSON), safetensors
    headers against the file length, and torch archives' zip structure and checksums. Checkpoints written before
    manifests existed are checked on what they contain.
    """
    folder = Path(folder)
    manifest_path = folder / MANIFEST_NAME
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf8"))
        except (OSError, ValueError) as error:
            return f"{MANIFEST_NAME} is unreadable ({error})"
        for name, size in manifest.get("files", {}).items():
            path = folder / name
            if not path.is_file():
                return f"{name} is missing"
            if path.stat().st_size != size:
                return f"{name} is {path.stat().st_size} bytes, {size} were written"
    trainer_state = folder / "trainer_state.json"
    if not trainer_state.is_file():
        return "trainer_state.json is missing"
    try:
        json.loads(trainer_state.read_text(encoding="utf8"))
    except (OSError, ValueError) as error:
        return f"trainer_state.json is unreadable ({error})"
    for path in sorted(folder.rglob("*")):
        if path.suffix == ".safetensors":
            problem = _safetensors_problem(path)
        elif path.suffix in _TORCH_ARCHIVES and path.is_file():
            problem = _archive_problem(path)
        else:
            continue
        if problem:
            return f"{path.relative_to(folder)} {problem}"
    return None


class CheckpointChoice:
    """The checkpoint to resume from, and the newer ones skipped because they are damaged."""

    def __init__(self, path: str | None, skipped: list[tuple[str, str]]) -> None:
        self.path = path
        self.skipped = skipped

    @property
    def step(self) -> int | None:
        return None if self.path is None else int(_CHECKPOINT.match(Path(self.path).name).group(1))


def newest_complete_checkpoint(run_dir: str | os.PathLike) -> CheckpointChoice:
    """The newest ``checkpoint-N`` of ``run_dir`` that :func:`checkpoint_problem` accepts; damaged newer ones are
    listed in ``skipped`` (a one-line warning each)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return CheckpointChoice(None, [])
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))]
    skipped: list[tuple[str, str]] = []
    for _, path in sorted(found, reverse=True):
        problem = checkpoint_problem(path)
        if problem is None:
            return CheckpointChoice(str(path), skipped)
        logger.warning("Skipping the damaged checkpoint %s: %s.", path, problem)
        skipped.append((str(path), problem))
    return CheckpointChoice(None, skipped)


def _safetensors_problem(path: Path) -> str | None:
    size = path.stat().st_size
    try:
        with path.open("rb") as handle:
            header_length = struct.unpack("<Q", handle.read(8))[0]
            header = json.loads(handle.read(header_length))
    except (OSError, struct.error, ValueError) as error:
        return f"has an unreadable header ({type(error).__name__})"
    end = max((spec["data_offsets"][1] for name, spec in header.items() if name != "__metadata__"), default=0)
    if 8 + header_length + end > size:
        return f"is truncated ({size} bytes, its header needs {8 + header_length + end})"
    return None


def _archive_problem(path: Path) -> str | None:
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (OSError, zipfile.BadZipFile) as error:
        return f"is not a complete torch archive ({error})"
    return f"fails its checksum ({bad})" if bad else None


def _fsync(path: Path) -> None:
    """Flush a file or directory to disk (best effort where the platform cannot open directories)."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
