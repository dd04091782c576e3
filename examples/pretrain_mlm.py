"""Masked-language-model pretraining of an encoder (contrastors / kl3m style), 30% masking.

An encoder (BERT, RoBERTa, ModernBERT...) is trained with MLM before contrastive training, as
nomic's contrastors does for nomic-bert and kl3m for its encoders (30% of tokens selected, BERT's
80/10/10). Full training by default, LoRA with `lora: {r: ...}`; saves the full (merged) model.

Defaults (examples/configs/pretrain_mlm.yaml): a tiny random BERT with MiniLM's tokenizer, built
offline, and SNLI sentences from ../shared/data; well under a minute on 2 CPU cores.

Run:
  python examples/pretrain_mlm.py [--config examples/configs/pretrain_mlm.yaml] [--set training.max_steps=20]
  accelerate launch --config_file examples/accelerate/multi_gpu.yaml examples/pretrain_mlm.py --config ...
"""

from __future__ import annotations

from pathlib import Path

from _common import load_config, model_path, snli_sentences, training_losses
from transformers import TrainingArguments

from st_contrast.pretraining import load_mlm_model, save_pretrained_model, tokenize_texts, train_masked_lm


def main() -> None:
    config = load_config(__doc__, "pretrain_mlm")
    output_dir = Path(config["output_dir"])
    model, tokenizer = load_mlm_model(model_path(config, "bert"), lora=config.get("lora"))
    dataset = tokenize_texts(tokenizer, snli_sentences(config["num_texts"]), config["max_seq_length"])
    args = TrainingArguments(output_dir=str(output_dir / "checkpoints"), **config["training"])
    trainer = train_masked_lm(
        model,
        tokenizer,
        dataset,
        args,
        mlm_probability=config["mlm_probability"],
        scheme=config["scheme"],
        shifted=False,
    )
    if trainer.is_world_process_zero():
        losses = training_losses(trainer.state.log_history)
        print(f"MLM loss: first {losses[0]:.4f}, last {losses[-1]:.4f}")
        written = save_pretrained_model(model, tokenizer, output_dir / "model", mode=config["save"])
        print(f"saved: {written}")


if __name__ == "__main__":
    main()
