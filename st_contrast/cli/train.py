"""``st-contrast train CONFIG.yaml [--set key=value ...]``: a configured training run, resumable by rerunning."""

from __future__ import annotations

import argparse
import json

__all__ = ["add_parser"]


def _train(args: argparse.Namespace) -> int:
    from st_contrast.training.config import load_config
    from st_contrast.training.run import train_from_config

    overrides = list(args.set)
    if args.output_dir:
        overrides.append(f"output_dir={json.dumps(args.output_dir)}")
    if args.no_resume:
        overrides.append("resume=false")
    config = load_config(args.config, overrides)
    metrics = train_from_config(config, restart=args.restart)
    from accelerate import PartialState

    state = PartialState()
    if state.is_main_process:
        _print_summary(config, metrics)
    # Under torchrun / accelerate launch: no rank exits while another may still be in a collective with it, and the
    # process group is torn down before the interpreter exits (as torch asks).
    state.wait_for_everyone()
    state.destroy_process_group()
    return 0


def _print_summary(config, metrics: dict) -> None:
    if "after" in metrics:  # MTEB (st_contrast.evaluation) is imported only when there are scores to show
        from st_contrast.evaluation import format_results_table

        print(format_results_table(metrics["after"], baseline=metrics.get("before", {})))
    train = metrics.get("train", {})
    print(json.dumps({key: train[key] for key in ("train_loss", "train_runtime", "epoch") if key in train}))
    print(f"model: {config.output_dir}/model   metrics: {config.output_dir}/metrics.json")


def add_parser(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "train",
        help="train from a YAML configuration (rerun to resume)",
        description="Train an embedding model from a YAML configuration (see examples/configs/quickstart.yaml). "
        "Rerunning the same command resumes from the newest checkpoint of output_dir.",
    )
    parser.add_argument("config", help="YAML configuration file")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a configuration value, e.g. --set training.max_steps=10 (repeatable; value parsed as YAML)",
    )
    parser.add_argument("--output-dir", help="override output_dir")
    parser.add_argument("--no-resume", action="store_true", help="refuse to continue from existing checkpoints")
    parser.add_argument(
        "--restart",
        action="store_true",
        help="start over: remove the run's checkpoints, model/, metrics and logs from output_dir first (a finished "
        "run is otherwise not trained again)",
    )
    parser.set_defaults(func=_train)
