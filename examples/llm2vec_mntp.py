"""LLM2Vec stage 2: masked next-token prediction (MNTP) on a bidirectional decoder, with LoRA.

The decoder is made bidirectional (stage 1, `set_causal(model, False)`), then trained to predict
masked tokens: the token at i from the logits at i-1 (BehnamGhader et al., 2024). The LoRA adapter
is merged and the full model saved (`save: merged`, with `is_causal: false` in its config.json),
ready for `llm2vec_simcse.py` / `llm2vec_supervised.py` (`model_name_or_path: <output_dir>/model`).

Defaults (examples/configs/scripts/llm2vec_mntp.yaml): a tiny random Llama built offline and SNLI sentences
from ../shared/data; about a minute on 2 CPU cores. For a real model set `model_name_or_path`.

Run:
  python examples/llm2vec_mntp.py [--config examples/configs/scripts/llm2vec_mntp.yaml] [--set training.max_steps=50]
  accelerate launch --config_file examples/accelerate/multi_gpu.yaml examples/llm2vec_mntp.py --config ...
"""

from __future__ import annotations

from helpers.scripts import load_config, model_path, run_masked_lm

from st_contrast.pretraining import load_mntp_model


def main() -> None:
    config = load_config(__doc__, "llm2vec_mntp")
    model, tokenizer = load_mntp_model(
        model_path(config, "llama"), mask_token=config["mask_token"], lora=config.get("lora")
    )
    run_masked_lm(config, model, tokenizer, shifted=True)


if __name__ == "__main__":
    main()
