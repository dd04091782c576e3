"""A long-lived interpreter where ``import st_contrast`` fails: saved models must load and embed in plain Sentence
Transformers, as for a colleague who never installed st_contrast.

One process serves every such check of the session (each new interpreter spends ~10 s importing the stack). Requests
go over its stdin as JSON lines; it answers with one JSON line: the path of the saved embeddings, or the error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["PlainSentenceTransformers"]

_SERVER = """
import gc, json, sys, traceback
import numpy as np


class NoStContrast:  # a colleague without st_contrast installed
    def find_spec(self, name, path=None, target=None):
        if name == "st_contrast" or name.startswith("st_contrast."):
            raise ImportError("st_contrast is not installed here")


sys.meta_path.insert(0, NoStContrast())
from PIL import Image
from sentence_transformers import SentenceTransformer

for line in sys.stdin:
    request = json.loads(line)
    try:
        model = SentenceTransformer(request["model_dir"], device="cpu", trust_remote_code=False)
        embeddings = [model.encode(request["texts"])]
        if request["images"]:
            archive = np.load(request["images"])
            embeddings.append(model.encode([Image.fromarray(archive[name]) for name in archive.files]))
        np.save(request["out"], np.concatenate(embeddings))
        leaked = [name for name in sys.modules if name.startswith("st_contrast")]
        answer = {"error": f"st_contrast got imported: {leaked}"} if leaked else {"out": request["out"]}
        del model
        gc.collect()
    except Exception:
        answer = {"error": traceback.format_exc()}
    print(json.dumps(answer), flush=True)
"""


class PlainSentenceTransformers:
    """The embeddings ``SentenceTransformer(model_dir)`` gives where st_contrast cannot be imported."""

    def __init__(self) -> None:
        env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
        self._process = subprocess.Popen(
            [sys.executable, "-c", _SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )

    def encode(self, model_dir: Path, texts: list[str], images: list[Image.Image] | None = None) -> np.ndarray:
        """The text embeddings, then the image embeddings (when ``images`` are given), of the saved model.

        Raises:
            AssertionError: The model did not load or encode there, or loading it imported st_contrast.
        """
        work = Path(model_dir).parent
        archive = None
        if images:
            archive = str(work / "plain_images.npz")
            np.savez(archive, *(np.asarray(image) for image in images))  # sizes may differ
        request = {"model_dir": str(model_dir), "texts": texts, "images": archive, "out": str(work / "plain.npy")}
        self._process.stdin.write(json.dumps(request) + "\n")
        self._process.stdin.flush()
        line = self._process.stdout.readline()
        assert line, f"the plain Sentence Transformers process ended (exit {self._process.poll()})"
        answer = json.loads(line)
        assert "error" not in answer, answer["error"]
        return np.load(answer["out"])

    def close(self) -> None:
        self._process.stdin.close()
        self._process.wait(timeout=60)
