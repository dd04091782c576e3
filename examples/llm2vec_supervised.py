"""LLM2Vec stage 4: supervised contrastive training with instructions, on NLI triplets, with LoRA.

Anchors carry a task instruction (left out of pooling by exact token boundaries), positives and
hard negatives do not; InfoNCE with in-batch and hard negatives (LLM2Vec trains on the E5 data mix
with the same loss). Prints STS-B dev Spearman (with the STS instruction) before and after, then
merges the adapter and saves a standalone model (reload with `st_contrast.load_model`).

Defaults (examples/configs/scripts/llm2vec_supervised.yaml): a tiny random Llama (or the SimCSE / MNTP
output) and NLI triplets from ../shared/data; about a minute on 2 CPU cores.

Run:
  python examples/llm2vec_supervised.py [--config examples/configs/scripts/llm2vec_supervised.yaml] [--set ...]
  accelerate launch --config_file examples/accelerate/multi_gpu.yaml examples/llm2vec_supervised.py --config ...
"""

from __future__ import annotations

from pathlib import Path

from helpers.data import nli_triplets, stsb_spearman
from helpers.scripts import finish_run, llm2vec_model_from_config, load_config
from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.base.sampler import BatchSamplers

from st_contrast.losses import InfoNCELoss


def main() -> None:
    config = load_config(__doc__, "llm2vec_supervised")
    output_dir = Path(config["output_dir"])
    model = llm2vec_model_from_config(config)
    sts_prompt, limit = config["sts_instruction"], config.get("stsb_pairs")
    print(f"STS-B dev Spearman before: {stsb_spearman(model, pairs=limit, prompt=sts_prompt):.2f}")
    args = SentenceTransformerTrainingArguments(
        output_dir=str(output_dir / "checkpoints"),
        prompts={"anchor": config["train_instruction"]},
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        **config["training"],
    )
    loss = InfoNCELoss(model, temperature=config["temperature"], learnable_temperature=False)
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=nli_triplets(config["num_triplets"]), loss=loss
    )
    trainer.train()
    finish_run(trainer, model, config, "supervised", lambda: stsb_spearman(model, pairs=limit, prompt=sts_prompt))


if __name__ == "__main__":
    main()
