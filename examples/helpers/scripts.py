"""The LLM2Vec / MLM scripts' own YAML configs (``examples/configs/scripts/``) and the run steps they share.

These configs are not ``st-contrast train`` configs (those are ``examples/configs/*.yaml``): each script reads its
own keys (see the file's comments), with ``--set a.b=value`` overrides parsed as YAML.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from st_contrast.training.config import apply_overrides, read_yaml

from .data import snli_sentences
from .tiny import tiny_model

__all__ = [
    "CONFIGS",
    "finish_run",
    "llm2vec_model_from_config",
    "load_config",
    "model_path",
    "run_masked_lm",
    "training_losses",
]

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "scripts"


def load_config(doc: str, name: str) -> dict[str, Any]:
    """``--config`` (default ``examples/configs/scripts/<name>.yaml``) plus ``--set a.b=value`` overrides."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(CONFIGS / f"{name}.yaml"), help="YAML config file")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. training.max_steps=5"
    )
    args = parser.parse_args()
    return apply_overrides(read_yaml(args.config), args.set)


def model_path(config: dict[str, Any], model_type: str) -> str:
    """The configured model, or (``model_name_or_path: null``) a tiny random one built offline in the output dir."""
    if config.get("model_name_or_path"):
        return str(config["model_name_or_path"])
    return tiny_model(Path(config["output_dir"]) / f"tiny-{model_type}", model_type)


def llm2vec_model_from_config(config: dict[str, Any], **options: Any) -> Any:
    """:func:`st_contrast.recipes.llm2vec_model` with the keys the LLM2Vec scripts share (``options`` add to them)."""
    from st_contrast.recipes import llm2vec_model

    return llm2vec_model(
        model_path(config, "llama"),
        pooling_mode=config["pooling_mode"],
        packed=config.get("packed", False),
        attention_backend=config.get("attention_backend") or "auto",
        max_seq_length=config["max_seq_length"],
        lora=config.get("lora"),
        **options,
    )


def training_losses(log_history: list[dict[str, Any]]) -> list[float]:
    return [round(entry["loss"], 4) for entry in log_history if "loss" in entry]


def finish_run(trainer: Any, model: Any, config: dict[str, Any], label: str, score: Any) -> None:
    """On rank 0: print the first and last training loss and ``score()`` after training, then save the model
    (LoRA merged into a standalone model) to ``output_dir/model``."""
    from st_contrast.adapters import merge_and_save

    if not trainer.is_world_process_zero():
        return
    losses = training_losses(trainer.state.log_history)
    print(f"{label} loss: first {losses[0]:.4f}, last {losses[-1]:.4f}")
    print(f"STS-B dev Spearman after: {score():.2f}")
    save_dir = Path(config["output_dir"]) / "model"
    if config.get("lora"):
        merge_and_save(model, save_dir)
    else:
        model.save(str(save_dir))
    print(f"saved: {save_dir}")


def run_masked_lm(config: dict[str, Any], model: Any, tokenizer: Any, *, shifted: bool) -> None:
    """Train ``model`` on SNLI sentences with MNTP (``shifted``) or MLM, print the loss, save on rank 0."""
    from transformers import TrainingArguments

    from st_contrast.pretraining import save_pretrained_model, tokenize_texts, train_masked_lm

    output_dir = Path(config["output_dir"])
    dataset = tokenize_texts(tokenizer, snli_sentences(config["num_texts"]), config["max_seq_length"])
    args = TrainingArguments(output_dir=str(output_dir / "checkpoints"), **config["training"])
    trainer = train_masked_lm(
        model,
        tokenizer,
        dataset,
        args,
        mlm_probability=config["mlm_probability"],
        scheme=config["scheme"],
        shifted=shifted,
    )
    if trainer.is_world_process_zero():
        losses = training_losses(trainer.state.log_history)  # empty when the run ends before logging_steps
        if losses:
            print(f"{'MNTP' if shifted else 'MLM'} loss: first {losses[0]:.4f}, last {losses[-1]:.4f}")
        written = save_pretrained_model(model, tokenizer, output_dir / "model", mode=config["save"])
        print(f"saved: {written}")
