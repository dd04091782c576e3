"""Run by ``torchrun --nproc_per_node=2`` (gloo, CPU) from the ``two_process_runs`` fixture of conftest.py: the
2-process checks of several test files in one launch (each launch spends ~10 s importing the stack in every process).

Arguments: ``<worker module> <its output folder> <JSON list of its other arguments>`` triples. The process group is
opened once; each worker's ``run(output_dir, *arguments)`` runs in turn on both ranks and writes its report into its
folder; a failure in one stops the launch (torchrun then ends the other rank), so no rank waits in a collective.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import torch.distributed as dist


def main(argv: list[str]) -> None:
    dist.init_process_group("gloo")
    for module, output_dir, arguments in zip(argv[::3], argv[1::3], argv[2::3], strict=True):
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        importlib.import_module(module).run(output_dir, *json.loads(arguments))
        dist.barrier()  # the next worker starts on both ranks together
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
