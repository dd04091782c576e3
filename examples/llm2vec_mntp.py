"""LLM2Vec stage 2: masked next-token prediction (MNTP) on a bidirectional decoder, with LoRA.

The decoder is made bidirectional (stage 1, `set_causal(model, False)`), then trained to predict
masked tokens: the token at i from the logits at i-1 (BehnamGhader et al., 2024). The LoRA adapter
is merged and the full model saved (`save: merged`, with `is_causal: false` in its config.json),
ready for `llm2vec_simcse.py` / `llm2vec_supervised.py` (`model_name_or_path: <output_dir>/model`).

Defaults (examples/configs/llm2vec_mntp.yaml): a tiny random Llama built offline and SNLI sentences
from ../shared/data; about a minute on 2 CPU cores. For a real model set `model_name_or_path`.

Run:
  python examples/llm2vec_mntp.py [--config examples/configs/llm2vec_mntp.yaml] [--set training.max_steps=50]
  accelerate launch --config_file examples/accelerate/multi_gpu.yaml examples/llm2vec_mntp.py --config ...
"""

from __future__ import annotations

from pathlib import Path

from _common import load_config, model_path, snli_sentences, training_losses
from transformers import TrainingArguments

from st_contrast.pretraining import load_mntp_model, save_pretrained_model, tokenize_texts, train_masked_lm


def main() -> None:
    config = load_config(__doc__, "llm2vec_mntp")
    output_dir = Path(config["output_dir"])
    model, tokenizer = load_mntp_model(
        model_path(config, "llama"), mask_token=config["mask_token"], lora=config.get("lora")
    )
    dataset = tokenize_texts(tokenizer, snli_sentences(config["num_texts"]), config["max_seq_length"])
    args = TrainingArguments(output_dir=str(output_dir / "checkpoints"), **config["training"])
    trainer = train_masked_lm(
        model,
        tokenizer,
        dataset,
        args,
        mlm_probability=config["mlm_probability"],
        scheme=config["scheme"],
        shifted=True,
    )
    if trainer.is_world_process_zero():
        losses = training_losses(trainer.state.log_history)
        print(f"MNTP loss: first {losses[0]:.4f}, last {losses[-1]:.4f}")
        written = save_pretrained_model(model, tokenizer, output_dir / "model", mode=config["save"])
        print(f"saved: {written}")


if __name__ == "__main__":
    main()
