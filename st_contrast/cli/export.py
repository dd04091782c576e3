"""``st-contrast export IN OUT``: write a model as a plain Sentence Transformers model, checked by reloading it."""

from __future__ import annotations

import argparse
import dataclasses
import json

__all__ = ["add_parser"]


def _export(args: argparse.Namespace) -> int:
    from st_contrast.model_io import export_model

    report = export_model(args.model, args.output, merge_adapters=not args.keep_adapters, verify=not args.no_verify)
    print(json.dumps(dataclasses.asdict(report), indent=2))
    return 0


def add_parser(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "export",
        help="write a model as a plain Sentence Transformers model (loads without st_contrast)",
        description="Convert a model saved by any st_contrast version into the plain Sentence Transformers format "
        "where its settings allow (packing and learned temperatures dropped, LLM2Vec tokenization moved into a "
        "stock Transformer and its tokenizer, LoRA merged), then reload it as SentenceTransformer(OUT) does and "
        "compare embeddings with the source.",
    )
    parser.add_argument("model", help="a saved model directory or hub id")
    parser.add_argument("output", help="the output directory")
    parser.add_argument("--keep-adapters", action="store_true", help="save LoRA adapters unmerged, on their base")
    parser.add_argument("--no-verify", action="store_true", help="skip the reload-and-compare check")
    parser.set_defaults(func=_export)
