"""LLM2Vec stage 3: unsupervised SimCSE on a bidirectional decoder (after MNTP), with LoRA.

Each sentence is embedded twice with different attention-dropout masks (the only dropout a Llama
has, set by `simcse_dropout`); the second view is its positive against the batch (Gao et al., 2021;
LLM2Vec uses dropout 0.3 and mean pooling). Prints STS-B dev Spearman before and after, then merges
the adapter and saves a standalone model (reload with `st_contrast.load_model`).

Defaults (examples/configs/scripts/llm2vec_simcse.yaml): a tiny random Llama (or set `model_name_or_path` to
the MNTP output, `output/llm2vec-mntp/model`) and SNLI sentences; about a minute on 2 CPU cores.

Run:
  python examples/llm2vec_simcse.py [--config examples/configs/scripts/llm2vec_simcse.yaml] [--set KEY=VALUE]
  accelerate launch --config_file examples/accelerate/multi_gpu.yaml examples/llm2vec_simcse.py --config ...
"""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset
from helpers.data import snli_sentences, stsb_spearman
from helpers.scripts import finish_run, llm2vec_model_from_config, load_config
from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

from st_contrast.losses import SimCSELoss


def main() -> None:
    config = load_config(__doc__, "llm2vec_simcse")
    output_dir = Path(config["output_dir"])
    model = llm2vec_model_from_config(config, attention_dropout=config["simcse_dropout"])
    limit = config.get("stsb_pairs")
    print(f"STS-B dev Spearman before: {stsb_spearman(model, pairs=limit):.2f}")
    train = Dataset.from_dict({"text": snli_sentences(config["num_texts"])})
    args = SentenceTransformerTrainingArguments(output_dir=str(output_dir / "checkpoints"), **config["training"])
    loss = SimCSELoss(model, temperature=config["temperature"], mini_batch_size=config.get("mini_batch_size"))
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train, loss=loss)
    trainer.train()
    finish_run(trainer, model, config, "SimCSE", lambda: stsb_spearman(model, pairs=limit))


if __name__ == "__main__":
    main()
