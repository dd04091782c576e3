"""Run an example script or the ``st-contrast`` command in this process, as its shell command would.

``python examples/x.py ARGS`` and ``st-contrast ARGS`` each start a new interpreter that spends about 10 s importing
sentence-transformers; the example tests run them here instead (where the libraries are already imported) and keep
subprocesses for what needs them: launchers (accelerate, torchrun), kills, and loading without st_contrast.
"""

from __future__ import annotations

import contextlib
import io
import os
import runpy
import sys
from pathlib import Path

__all__ = ["run_cli", "run_script"]


def run_script(script: Path, *args: str, cwd: Path | None = None) -> str:
    """``python script ARGS`` (in ``cwd``): run as ``__main__`` with its directory first on ``sys.path``; its stdout.

    Raises:
        AssertionError: The script exited with a non-zero status or a message (the output so far is shown).
    """
    saved_argv, saved_path, saved_cwd = sys.argv, list(sys.path), os.getcwd()
    output = io.StringIO()
    sys.argv = [str(script), *args]
    sys.path.insert(0, str(script.parent))
    if cwd is not None:
        os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(output):
            runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exit_:
        if exit_.code not in (None, 0):
            raise AssertionError(f"{script.name} exited with {exit_.code!r}:\n{output.getvalue()[-3000:]}") from None
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
        os.chdir(saved_cwd)
    return output.getvalue()


def run_cli(*args: str) -> str:
    """``st-contrast ARGS``; its stdout.

    Raises:
        AssertionError: It returned a non-zero exit status (the output is shown).
    """
    from st_contrast.cli import main

    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        code = main(list(args))
    assert code == 0, f"st-contrast {' '.join(args[:2])} exited with {code}:\n{output.getvalue()[-3000:]}"
    return output.getvalue()
