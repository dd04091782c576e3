"""The README's Python snippets run as written (in a scratch copy of the layout: the repo beside ../shared).

A snippet that needs the output of a command shown before it (e.g. the MNTP example's model) is preceded by an
HTML comment ``<!-- readme-test: after <command> -->``; the test runs that command first.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SNIPPET = re.compile(r"(?:<!-- readme-test: after (?P<after>.+?) -->\n)?```python\n(?P<code>.*?)```", re.S)


def snippets() -> list[tuple[str | None, str]]:
    return [(match["after"], match["code"]) for match in SNIPPET.finditer((ROOT / "README.md").read_text())]


def test_every_python_block_is_found():
    assert len(snippets()) == (ROOT / "README.md").read_text().count("```python")


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(snippets())))
def test_readme_snippet_runs(index, tmp_path, shared_data):
    after, code = snippets()[index]
    workdir = tmp_path / "repo"
    workdir.mkdir()
    (tmp_path / "shared").symlink_to(shared_data.parent)  # README paths are ../shared/data/...
    (workdir / "examples").symlink_to(ROOT / "examples")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    if after:
        prepared = subprocess.run(after, shell=True, cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
        assert prepared.returncode == 0, prepared.stderr[-3000:]
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=workdir, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"README snippet {index}:\n{code}\n{result.stderr[-3000:]}"
