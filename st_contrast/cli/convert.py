"""``st-contrast convert-open-clip SOURCE OUT``: an open_clip CLIP as a plain Sentence Transformers model, checked
against open_clip's own embeddings."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

__all__ = ["add_parser"]


def _convert_open_clip(args: argparse.Namespace) -> int:
    from st_contrast.recipes.open_clip_checkpoint import convert_open_clip

    try:
        report = convert_open_clip(args.source, args.output, pretrained=args.pretrained, verify=not args.no_verify)
    except (ValueError, ImportError) as error:
        if args.debug:
            raise
        print(f"st-contrast convert-open-clip: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    print(json.dumps(dataclasses.asdict(report), indent=2))
    return 0


def add_parser(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "convert-open-clip",
        help="convert an open_clip CLIP into a plain Sentence Transformers model (needs open_clip_torch)",
        description="Write an open_clip CLIP (ViT image tower, its own text transformer) as a transformers "
        "CLIPModel + CLIPProcessor folder that is also a Sentence Transformers model, loadable without open_clip or "
        "st_contrast; then reload it and compare its embeddings of probe texts and images with open_clip's. Prints "
        "the differences and open_clip's logit scale.",
    )
    parser.add_argument(
        "source",
        help="a folder in open_clip's format (open_clip_config.json + weights), hf-hub:org/name, or a built-in "
        "architecture such as ViT-B-32 (with --pretrained)",
    )
    parser.add_argument("output", help="the output directory")
    parser.add_argument(
        "--pretrained", help="for a built-in architecture: a pretrained tag or a checkpoint file (epoch_N.pt)"
    )
    parser.add_argument("--no-verify", action="store_true", help="skip the reload-and-compare check")
    parser.set_defaults(func=_convert_open_clip)
