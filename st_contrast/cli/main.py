"""``st-contrast`` entry point: one sub-command per job."""

from __future__ import annotations

import argparse
import json
import sys

from st_contrast.cli import describe, evaluate, train

__all__ = ["main"]


def _info(_: argparse.Namespace) -> int:
    """Print versions and which attention backends can run on this machine."""
    import sentence_transformers
    import torch
    import transformers

    import st_contrast
    from st_contrast.attention import available_backends

    report = {
        "st_contrast": st_contrast.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "cuda": torch.cuda.is_available(),
        "attention_backends": {name: reason or "available" for name, reason in available_backends().items()},
    }
    print(json.dumps(report, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="st-contrast", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    info = commands.add_parser("info", help="versions and available attention backends")
    info.set_defaults(func=_info)
    train.add_parser(commands)
    evaluate.add_parser(commands)
    describe.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from st_contrast.training.config import ConfigError

    try:
        return args.func(args)
    except ConfigError as error:
        print(f"st-contrast {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
