"""``st-contrast`` entry point: one sub-command per job."""

from __future__ import annotations

import argparse
import json
import sys

from st_contrast.cli import convert, describe, evaluate, export, train

__all__ = ["main"]


_VERSIONED = (
    "sentence-transformers", "transformers", "peft", "accelerate", "datasets", "mteb", "torch", "torchvision", "timm",
    "open_clip_torch",
)  # fmt: skip


def _info(_: argparse.Namespace) -> int:
    """Print versions, known-broken version combinations, which attention backends can run here and whether timm
    image towers can."""
    from importlib import metadata

    import torch

    import st_contrast
    from st_contrast.attention import available_backends
    from st_contrast.compat import adapter_support_problem
    from st_contrast.recipes.timm_tower import require_timm

    versions = {}
    for package in _VERSIONED:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    problem = adapter_support_problem()
    try:
        require_timm()
        timm_towers = "available"
    except ImportError as error:
        timm_towers = str(error)
    report = {
        "st_contrast": st_contrast.__version__,
        **versions,
        "cuda": torch.cuda.is_available(),
        "lora_adapters": problem or "available",
        "attention_backends": {name: reason or "available" for name, reason in available_backends().items()},
        "timm_towers": timm_towers,
    }
    print(json.dumps(report, indent=2))
    if problem:
        print(f"st-contrast info: BROKEN COMBINATION: {problem}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="st-contrast", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True)
    info = commands.add_parser("info", help="versions and available attention backends")
    info.set_defaults(func=_info)
    train.add_parser(commands)
    evaluate.add_parser(commands)
    export.add_parser(commands)
    convert.add_parser(commands)
    describe.add_parser(commands)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors that describe bad input (the message names the key, or the file and line): one line, exit 2."""
    from st_contrast.compat import CompatibilityError
    from st_contrast.data import DataError
    from st_contrast.evaluation.errors import DataFormatError, HubUnavailableError, TaskSpecError
    from st_contrast.training.validation import ConfigError

    return ConfigError, CompatibilityError, DataError, DataFormatError, HubUnavailableError, TaskSpecError


def _is_user_error(error: Exception) -> bool:
    try:
        return isinstance(error, _user_errors())
    except ImportError:  # a missing dependency stops those modules from importing: not one of their errors
        return False


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ModuleNotFoundError as error:
        if args.debug or error.name is None:
            raise
        print(
            f"st-contrast {args.command}: error: {error}: install the package that provides it "
            "(pip install st-contrast brings st_contrast's own dependencies; --debug shows where it was imported)",
            file=sys.stderr,
        )
        return 2
    except Exception as error:
        if args.debug or not _is_user_error(error):
            raise
        message = " ".join(str(error).split())
        print(f"st-contrast {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
