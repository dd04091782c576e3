"""The README's Python snippets run as written (in a scratch copy of the layout: the repo beside ../shared).

Each snippet runs as a ``__main__`` script in a fresh namespace of this process, so the libraries' import time (about
10 s for sentence-transformers) is paid once for all of them. A snippet that needs the output of a command shown before
it (e.g. the MNTP example's model) is preceded by an HTML comment ``<!-- readme-test: after <command> -->``; the test
runs that command first, in a shell.
"""

from __future__ import annotations

import linecache
import re
import subprocess
from pathlib import Path

import pytest
from conftest import env_for_shell_commands

ROOT = Path(__file__).resolve().parents[1]
SNIPPET = re.compile(r"(?:<!-- readme-test: after (?P<after>.+?) -->\n)?```python\n(?P<code>.*?)```", re.S)


def snippets() -> list[tuple[str | None, str]]:
    return [(match["after"], match["code"]) for match in SNIPPET.finditer((ROOT / "README.md").read_text())]


def test_every_python_block_is_found():
    assert len(snippets()) == (ROOT / "README.md").read_text().count("```python")


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(snippets())))
def test_readme_snippet_runs(index, tmp_path, shared_data, monkeypatch):
    after, code = snippets()[index]
    workdir = tmp_path / "repo"
    workdir.mkdir()
    (tmp_path / "shared").symlink_to(shared_data.parent)  # README paths are ../shared/data/...
    (workdir / "examples").symlink_to(ROOT / "examples")
    env = env_for_shell_commands(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if after:
        prepared = subprocess.run(after, shell=True, cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
        assert prepared.returncode == 0, prepared.stderr[-3000:]
    monkeypatch.chdir(workdir)
    name = f"<README.md python snippet {index}>"
    linecache.cache[name] = (len(code), None, code.splitlines(keepends=True), name)  # its lines in tracebacks
    exec(compile(code, name, "exec"), {"__name__": "__main__"})
