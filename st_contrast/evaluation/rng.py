"""Keeping the caller's random state: MTEB reseeds ``random``, NumPy and torch when it builds a task or evaluator."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

__all__ = ["preserved_rng_state"]


@contextmanager
def preserved_rng_state() -> Iterator[None]:
    """Restore the Python, NumPy and torch (CPU and initialised CUDA) generators on exit.

    MTEB seeds all three globally (seed 42) in every task constructor and evaluator. Evaluating in the
    middle of a training run (before/after training, or from a callback) would otherwise change the
    dropout masks and data order of everything that follows.
    """
    python_state = random.getstate()
    numpy_state = np.random.get_state()  # noqa: NPY002 -- the legacy global generator is what MTEB reseeds
    torch_state = torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)  # noqa: NPY002
        torch.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
