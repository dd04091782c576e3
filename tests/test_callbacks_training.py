"""Monitoring inside real SentenceTransformerTrainer runs (tiny BERT, a few CPU steps)."""

from __future__ import annotations

import json

import pytest
from datasets import Dataset, DatasetDict
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
from transformers import TrainerCallback

from st_contrast import ContrastiveTrainer
from st_contrast.callbacks import ThroughputMonitor, enable_monitoring, read_jsonl, weight_spectrum
from st_contrast.callbacks.batch_statistics import batch_stats
from st_contrast.modules import FlashTransformer


class RecordingTrainer(ContrastiveTrainer):
    """Records, independently of the monitor, the real tokens of every batch it trains on."""

    def training_step(self, model, inputs, num_items_in_batch=None):
        masks = [value for key, value in inputs.items() if key.endswith("_attention_mask")]
        self.seen.append(
            {
                "step": self.state.global_step + 1,
                "dataset": inputs.get("dataset_name"),
                "rows": masks[0].shape[0] if masks else None,
                "tokens": int(sum(mask.sum() for mask in masks)),
                "padded": int(sum(mask.numel() for mask in masks)),
            }
        )
        return super().training_step(model, inputs, num_items_in_batch)


class StopAt(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True


def sentences(n: int, offset: int = 0) -> list[str]:
    return [f"sentence {i} " + "with more words " * ((i * 7) % 5) for i in range(offset, offset + n)]


def tiny_model(path: str, packed: bool = False) -> SentenceTransformer:
    backbone = FlashTransformer(path, max_seq_length=32) if packed else Transformer(path, max_seq_length=32)
    return SentenceTransformer(modules=[backbone, Pooling(backbone.get_embedding_dimension(), "mean")], device="cpu")


def train_args(output_dir, **overrides) -> SentenceTransformerTrainingArguments:
    settings = dict(
        max_steps=4, per_device_train_batch_size=4, logging_steps=1, report_to=[], save_strategy="no", use_cpu=True
    )
    settings.update(overrides)
    return SentenceTransformerTrainingArguments(str(output_dir), **settings)


def two_datasets() -> DatasetDict:
    return DatasetDict(
        {
            "alpha": Dataset.from_dict({"anchor": sentences(12), "positive": sentences(12, 100)}),
            "beta": Dataset.from_dict({"anchor": sentences(12, 200), "positive": sentences(12, 300)}),
        }
    )


@pytest.mark.parametrize("accumulation", [1, 2])
def test_tokens_equal_attention_mask_sums_per_dataset(tmp_path, tiny_model_factory, accumulation):
    model = tiny_model(tiny_model_factory("bert"))
    args = train_args(tmp_path, gradient_accumulation_steps=accumulation)
    trainer = RecordingTrainer(
        model=model, args=args, train_dataset=two_datasets(), loss=MultipleNegativesRankingLoss(model)
    )
    trainer.seen = []
    trainer.train()
    log = read_jsonl(tmp_path / "log.jsonl")
    assert [record["step"] for record in log] == [1, 2, 3, 4]
    assert {seen["dataset"] for seen in trainer.seen} <= {"alpha", "beta"}
    for record in log:
        batches = [seen for seen in trainer.seen if seen["step"] <= record["step"]]
        assert record["tokens_seen"] == sum(seen["tokens"] for seen in batches)
        assert record["samples_seen"] == sum(seen["rows"] for seen in batches)
        for name in ("alpha", "beta"):
            assert record[f"tokens_seen/{name}"] == sum(s["tokens"] for s in batches if s["dataset"] == name)
            assert record[f"samples_seen/{name}"] == sum(s["rows"] for s in batches if s["dataset"] == name)
        for key in ("loss", "learning_rate", "grad_norm", "epoch", "tokens_per_second", "samples_per_second"):
            assert key in record
        parts = record["data_time"] + record["fwd_bwd_time"] + record["optimizer_time"]
        assert 0 < parts <= record["step_time"] * 1.001
        assert record["tokens_per_second"] == pytest.approx(
            sum(s["tokens"] for s in trainer.seen if s["step"] == record["step"]) / record["step_time"], rel=1e-6
        )
    assert sum(seen["padded"] for seen in trainer.seen) > log[-1]["tokens_seen"]  # padding is not counted
    # the trainer's own logs (what report_to receives) carry the same metrics
    train_logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert [entry["tokens_seen"] for entry in train_logs] == [record["tokens_seen"] for record in log]
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert info["datasets"] == ["alpha", "beta"] and info["flops"]["num_layers"] == 2


def test_packed_batches_count_the_same_tokens(tmp_path, tiny_model_factory):
    path = tiny_model_factory("bert")
    totals = []
    for packed in (False, True):
        model = tiny_model(path, packed=packed)
        dataset = Dataset.from_dict({"anchor": sentences(16), "positive": sentences(16, 50)})
        args = train_args(tmp_path / str(packed), seed=3)
        trainer = ContrastiveTrainer(
            model=model, args=args, train_dataset=dataset, loss=MultipleNegativesRankingLoss(model)
        )
        batch = trainer.data_collator([dataset[i] for i in range(4)])
        assert ("anchor_cu_seq_lens_q" in batch) is packed and ("anchor_attention_mask" in batch) is not packed
        totals.append((batch_stats(batch).tokens.item(), batch_stats(batch).sum_squared_lengths.item()))
        trainer.train()
        totals.append(read_jsonl(tmp_path / str(packed) / "log.jsonl")[-1]["tokens_seen"])
    assert totals[0] == totals[2] and totals[1] == totals[3]


@pytest.mark.parametrize("restore_callback_states", [False, True])
def test_log_has_one_line_per_step_across_resume(tmp_path, tiny_model_factory, restore_callback_states):
    path = tiny_model_factory("bert")
    dataset = Dataset.from_dict({"anchor": sentences(40), "positive": sentences(40, 100)})
    seen = []

    def run(stop_at: int | None, resume: bool) -> RecordingTrainer:
        model = tiny_model(path)
        args = train_args(
            tmp_path,
            max_steps=6,
            save_strategy="steps",
            save_steps=2,
            restore_callback_states_from_checkpoint=restore_callback_states,
        )
        trainer = RecordingTrainer(
            model=model,
            args=args,
            train_dataset=dataset,
            loss=MultipleNegativesRankingLoss(model),
            callbacks=[StopAt(stop_at)] if stop_at else None,
        )
        trainer.seen = seen
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    run(stop_at=3, resume=False)  # checkpoint-2 is saved, step 3 is logged, then the run "crashes"
    assert [record["step"] for record in read_jsonl(tmp_path / "log.jsonl")] == [1, 2, 3]
    del seen[2:]  # the resumed run retrains step 3 from checkpoint-2
    run(stop_at=None, resume=True)
    log = read_jsonl(tmp_path / "log.jsonl")
    assert [record["step"] for record in log] == [1, 2, 3, 4, 5, 6]
    assert [seen_batch["step"] for seen_batch in seen] == [1, 2, 3, 4, 5, 6]
    for record in log:  # the counters continue from the checkpoint
        assert record["tokens_seen"] == sum(s["tokens"] for s in seen if s["step"] <= record["step"])


def test_spectrum_logged_every_n_steps(tmp_path, tiny_model_factory):
    model = tiny_model(tiny_model_factory("bert"))
    dataset = Dataset.from_dict({"anchor": sentences(16), "positive": sentences(16, 50)})
    trainer = ContrastiveTrainer(
        model=model,
        args=train_args(tmp_path),
        train_dataset=dataset,
        loss=MultipleNegativesRankingLoss(model),
        monitoring={"spectrum_every": 2, "spectrum_patterns": [r"layer\.1\.attention\.self\.query"]},
    )
    trainer.train()
    log = read_jsonl(tmp_path / "log.jsonl")
    assert ["spectrum/mean" in record for record in log] == [False, True, False, True]
    expected = weight_spectrum(model, [r"layer\.1\.attention\.self\.query"])  # the final weights, step 4
    assert len(expected) == 3
    for key, value in expected.items():
        assert log[-1][key] == pytest.approx(value, rel=1e-5)


def test_geometry_probe_reaches_eval_log(tmp_path, tiny_model_factory):
    model = tiny_model(tiny_model_factory("bert"))
    dataset = Dataset.from_dict({"anchor": sentences(16), "positive": sentences(16, 50)})
    probe = list(zip(sentences(6, 500), sentences(6, 600), strict=True))
    trainer = ContrastiveTrainer(
        model=model,
        args=train_args(tmp_path, eval_strategy="steps", eval_steps=2),
        train_dataset=dataset,
        loss=MultipleNegativesRankingLoss(model),
        monitoring={"probe": probe},
    )
    trainer.train()
    evals = read_jsonl(tmp_path / "eval.jsonl")
    assert [record["step"] for record in evals] == [2, 4]
    assert {"eval_geometry_anisotropy", "eval_geometry_effective_rank", "eval_geometry_alignment"} <= set(evals[-1])


def test_plain_trainer_is_refused_with_the_fix(tmp_path, tiny_model_factory):
    model = tiny_model(tiny_model_factory("bert"))
    dataset = Dataset.from_dict({"anchor": sentences(4), "positive": sentences(4, 50)})
    trainer = SentenceTransformerTrainer(model=model, args=train_args(tmp_path), train_dataset=dataset)
    with pytest.raises(TypeError, match="ContrastiveTrainer"):
        enable_monitoring(trainer)
    with pytest.raises(ValueError, match="peak_flops must be positive"):
        ContrastiveTrainer(model=model, args=train_args(tmp_path), train_dataset=dataset, monitoring={"peak_flops": 0})


def test_mfu_in_logs_uses_the_given_peak(tmp_path, tiny_model_factory):
    model = tiny_model(tiny_model_factory("bert"))
    dataset = Dataset.from_dict({"anchor": sentences(8), "positive": sentences(8, 50)})
    trainer = RecordingTrainer(
        model=model,
        args=train_args(tmp_path, max_steps=2),
        train_dataset=dataset,
        loss=MultipleNegativesRankingLoss(model),
        monitoring={"peak_flops": 1e9},
    )
    trainer.seen = []
    trainer.train()
    flops = trainer._monitoring_callback(ThroughputMonitor).flops
    config = model[0].auto_model.config
    assert flops.num_layers == config.num_hidden_layers and flops.hidden_size == config.hidden_size
    record = read_jsonl(tmp_path / "log.jsonl")[-1]
    tokens = sum(seen["tokens"] for seen in trainer.seen if seen["step"] == 2)
    # 6N per token plus the attention term: between 6N * tokens and (6N + 12 L d * 32) * tokens
    low = 6 * flops.non_embedding_params * tokens / record["step_time"] / 1e9
    high = flops.flops_per_token(32) * tokens / record["step_time"] / 1e9
    assert low < record["mfu"] < high
