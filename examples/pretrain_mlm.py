"""Masked-language-model pretraining of an encoder (contrastors / kl3m style), 30% masking.

An encoder (BERT, RoBERTa, ModernBERT, NomicBERT...) is trained with MLM before contrastive training, as
nomic's contrastors does for nomic-bert and kl3m for its encoders (30% of tokens selected, BERT's
80/10/10), packed (no compute on padding; `packed: false` for architectures that cannot run packed). Full
training by default, LoRA with `lora: {r: ...}`; saves the full (merged) model.

Defaults (examples/configs/scripts/pretrain_mlm.yaml): a tiny random BERT with MiniLM's tokenizer, built
offline, and SNLI sentences from ../shared/data; well under a minute on 2 CPU cores.

Run:
  python examples/pretrain_mlm.py [--config examples/configs/scripts/pretrain_mlm.yaml] [--set training.max_steps=20]
  accelerate launch --config_file examples/accelerate/multi_gpu.yaml examples/pretrain_mlm.py --config ...
"""

from __future__ import annotations

from helpers.scripts import load_config, model_path, run_masked_lm

from st_contrast.pretraining import load_mlm_model


def main() -> None:
    config = load_config(__doc__, "pretrain_mlm")
    model, tokenizer = load_mlm_model(
        model_path(config, "bert"), lora=config.get("lora"), packed=config.get("packed", False)
    )
    run_masked_lm(config, model, tokenizer, shifted=False)


if __name__ == "__main__":
    main()
