"""The benchmark scripts run end to end (tiny settings) and report well-formed ratios.

Speed claims come from running the benchmarks at full size (benchmarks/RESULTS.md); this only
keeps the scripts working, so it asserts structure, sanity and the figures that must agree exactly (the loss of
one batch under three implementations), never a speed-up. bench_losses.py and bench_backbone.py run in
test_gpu_check.py, in the CPU form of the GPU check.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_benchmark(script: str, *args: str) -> dict:
    """Run ``benchmarks/<script>`` with ``args`` and return the JSON report it prints."""
    command = [sys.executable, str(ROOT / "benchmarks" / script), *args]
    return json.loads(subprocess.run(command, capture_output=True, text=True, check=True, timeout=600).stdout)


@pytest.mark.slow
def test_bench_backbone_random_nomic_bert():
    """--config builds a NomicBERT-like model offline and times it against stock ST."""
    report = run_benchmark(
        "bench_backbone.py", "--config=nomic_bert", "--hidden-size=64", "--layers=2", "--batch-size=8", "--steps=1",
        "--warmup=1", "--encode-sentences=32", "--max-seq-length=64",
    )  # fmt: skip
    assert report["model"] == "random nomic_bert (hidden 64, 2 layers)"
    for section in ("train", "encode"):
        assert report[section]["ratio"] > 0


@pytest.mark.slow
def test_bench_adapters_small_run():
    report = run_benchmark(
        "bench_adapters.py", "--batch-size=4", "--steps=1", "--warmup=1", "--max-seq-length=32", "--in-process"
    )
    methods = report["methods"]
    assert methods["full"]["trainable_params"] == methods["full"]["total_params"]
    assert (
        0
        < methods["bitfit"]["trainable_params"]
        < methods["lora"]["trainable_params"]
        < methods["full"]["total_params"]
    )
    assert methods["lora"]["total_params"] == methods["full"]["total_params"] + methods["lora"]["trainable_params"]
    for method in ("bitfit", "lora"):
        ratios = report["ratios_vs_full"][method]
        assert ratios["trainable_params"] == pytest.approx(
            methods[method]["trainable_params"] / methods["full"]["trainable_params"], abs=1e-5
        )
        assert ratios["step_time"] > 0


@pytest.mark.slow
def test_bench_image_text_small_run():
    report = run_benchmark(
        "bench_image_text.py", "--batch-sizes=8", "--mini-batch-size=4", "--steps=1", "--warmup=0", "--image-size=16",
        "--in-process",
    )  # fmt: skip
    figures = report["batches"]["8"]
    for method in ("uncached", "cached", "stock_cached"):
        assert figures[method]["images_per_s"] == pytest.approx(8 / figures[method]["seconds"], abs=0.051)  # 0.1 steps
        assert figures[method]["peak_mib"] >= 0
    # The same image-text batch gives the same CLIP loss whichever way it is computed (8 pairs of a random model).
    losses = [figures[method]["loss"] for method in ("uncached", "cached", "stock_cached")]
    assert losses[0] > 0.1 and losses == pytest.approx([losses[0]] * 3, rel=1e-5, abs=1e-6)


@pytest.mark.slow
def test_bench_streaming_small_run():
    report = run_benchmark(
        "bench_streaming.py", "--rows=2000", "--shards=4", "--batch-size=8", "--buffer=100", "--train-steps=1"
    )
    stream, arrow = report["stream_s3"], report["arrow_cache_local"]
    assert stream["rows"] == arrow["rows"] == 2000  # one epoch of the stream: every row (2000 = 250 batches of 8)
    assert stream["rows_per_s"] > 0 and arrow["rows_per_s"] > 0 and report["train_packed_minilm"]["rows_per_s"] > 0
    assert stream["local_disk_bytes"] == 0 < arrow["local_disk_bytes"]  # the stream copies nothing to disk
    assert 0 < stream["seconds_to_first_batch"] <= stream["seconds"]
    assert report["stream_vs_training"] == pytest.approx(
        stream["rows_per_s"] / report["train_packed_minilm"]["rows_per_s"], rel=0.01, abs=0.051
    )  # printed to 1 decimal


@pytest.mark.slow
def test_bench_image_streaming_small_run():
    report = run_benchmark(
        "bench_image_streaming.py", "--rows=120", "--shards=3", "--batch-size=16", "--buffer=40", "--image-size=32"
    )
    readers = [report[name] for name in ("stream", "indexed", "hf_local")]
    assert [reader["rows"] for reader in readers] == [112, 112, 112]  # one epoch of whole batches: 7 of 16
    assert all(0 < reader["seconds_to_first_batch"] <= reader["seconds"] for reader in readers)
    # the ratios are printed to 2 decimals: equal to the quotient of the printed figures up to that rounding
    assert report["stream_vs_indexed"] == pytest.approx(readers[0]["rows_per_s"] / readers[1]["rows_per_s"], abs=0.006)
    decode = report["decode"]["images_per_s"]
    assert decode["one_thread"] > 0 and report["decode_threads_vs_one"] == pytest.approx(
        decode["default_threads"] / decode["one_thread"], abs=0.006
    )
