"""Running masked pretraining through the transformers ``Trainer`` (and ``accelerate launch``), then saving."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer, TrainingArguments

from st_contrast.adapters.merging import merge_lora
from st_contrast.compat import has_peft_adapters
from st_contrast.pretraining.masking import MaskingCollator
from st_contrast.pretraining.models import is_packed_model, packed_position_offset

__all__ = ["SAVE_MODES", "save_pretrained_model", "tokenize_texts", "train_masked_lm"]

SAVE_MODES = ("merged", "adapter", "both")


def tokenize_texts(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int) -> Dataset:
    """A ``Dataset`` of ``input_ids`` (with the tokenizer's special tokens, truncated), for the collator."""
    dataset = Dataset.from_dict({"text": list(texts)})
    return dataset.map(
        lambda batch: tokenizer(batch["text"], truncation=True, max_length=max_length),
        batched=True,
        remove_columns=["text"],
    )


def train_masked_lm(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train_dataset: Dataset,
    args: TrainingArguments,
    *,
    mlm_probability: float,
    scheme: str = "bert",
    shifted: bool,
) -> Trainer:
    """Train MNTP (``shifted=True``) or MLM with ``Trainer``; returns the trainer after ``train()``.

    Runs as is under ``accelerate launch`` / ``torchrun`` (the trainer handles the processes). A model loaded with
    ``load_mlm_model(..., packed=True)`` gets packed batches (same masking, same loss, no compute on padding).

    Example:
        ::

            from transformers import TrainingArguments
            from st_contrast.pretraining import load_mlm_model, tokenize_texts, train_masked_lm

            model, tokenizer = load_mlm_model("bert-base-uncased", packed=True)
            dataset = tokenize_texts(tokenizer, ["A man plays a guitar.", "Two dogs run."], max_length=128)
            args = TrainingArguments("output/mlm", max_steps=10, per_device_train_batch_size=2, report_to=[])
            train_masked_lm(model, tokenizer, dataset, args, mlm_probability=0.3, shifted=False)
    """
    packed = is_packed_model(model)
    collator = MaskingCollator(
        tokenizer,
        mlm_probability=mlm_probability,
        scheme=scheme,
        shifted=shifted,
        packed=packed,
        position_offset=packed_position_offset(model) if packed else 0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=train_dataset, data_collator=collator)
    trainer.train()
    return trainer


def save_pretrained_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    output_dir: str | Path,
    *,
    mode: str = "merged",
) -> dict[str, str]:
    """Save a pretrained model: full weights (LoRA merged in, if any) and/or the LoRA adapter alone.

    Args:
        model: The trained model (with or without LoRA adapters).
        tokenizer: Saved beside it (with its mask token).
        output_dir: ``merged`` goes to ``output_dir`` itself (``config.json`` keeps ``is_causal: false``, so
            the next stage loads it bidirectional), ``adapter`` to ``output_dir/adapter``.
        mode: ``"merged"``, ``"adapter"`` (LoRA only) or ``"both"``.

    Returns:
        ``{"merged": dir, "adapter": dir}`` for what was written.
    """
    if mode not in SAVE_MODES:
        raise ValueError(f"Unknown save mode {mode!r}; choose one of {SAVE_MODES}.")
    has_adapter = has_peft_adapters(model)
    if mode != "merged" and not has_adapter:
        raise ValueError(f"save mode {mode!r} needs a LoRA adapter, but the model was fully trained; use 'merged'.")
    output_dir = Path(output_dir)
    written = {}
    if mode in ("adapter", "both"):
        model.save_pretrained(output_dir / "adapter")
        tokenizer.save_pretrained(output_dir / "adapter")
        written["adapter"] = str(output_dir / "adapter")
    if mode in ("merged", "both"):
        full = merge_lora(copy.deepcopy(model)) if has_adapter else model
        full.save_pretrained(output_dir)
        tokenizer.save_pretrained(output_dir)
        written["merged"] = str(output_dir)
    return written
