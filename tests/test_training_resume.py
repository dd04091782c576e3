"""ContrastiveTrainer: a run stopped after a checkpoint and resumed equals an uninterrupted run, loss state included."""

from __future__ import annotations

import pytest
import torch
from conftest import read_tsv_column
from datasets import Dataset
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
from transformers import TrainerCallback

from st_contrast import ContrastiveTrainer
from st_contrast.losses import GlobalContrastiveLoss, GloFND, InfoNCELoss
from st_contrast.training import load_loss_state, loss_state_dict

NUM_ROWS, BATCH, STEPS, STOP_AT = 48, 8, 6, 3


class StopAt(TrainerCallback):
    """Stops training right after the checkpoint of step ``step`` (the stand-in for a killed job)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_save = True
            control.should_training_stop = True
        return control


def triplets(shared_data) -> Dataset:
    path = shared_data / "nli" / "derived" / "triplets.tsv.gz"
    columns = {name: read_tsv_column(path, name, NUM_ROWS) for name in ("anchor", "positive", "negative")}
    return Dataset.from_dict({**columns, "label": list(range(NUM_ROWS))})


def make_loss(kind: str, model: SentenceTransformer):
    if kind == "glofnd":
        detector = GloFND(num_samples=NUM_ROWS, alpha=0.2, start_step=1, lr=0.2)
        return InfoNCELoss(model, learnable_temperature=True, false_negative_detector=detector)
    return GlobalContrastiveLoss(model, num_samples=NUM_ROWS)


def run(model_path, dataset, output_dir, kind, *, trainer_class=ContrastiveTrainer, stop_at=None, resume=False):
    torch.manual_seed(0)
    model = SentenceTransformer(model_path, device="cpu")
    loss = make_loss(kind, model)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=BATCH,
        max_steps=STEPS,
        learning_rate=1e-3,
        warmup_steps=2,
        seed=0,
        save_strategy="steps",
        save_steps=STOP_AT,
        report_to=[],
        use_cpu=True,
        dataloader_drop_last=True,
    )
    callbacks = [StopAt(stop_at)] if stop_at else []
    trainer = trainer_class(model=model, args=args, train_dataset=dataset, loss=loss, callbacks=callbacks)
    trainer.train(resume_from_checkpoint=resume or None)
    return model, loss, trainer


def flat_weights(model: SentenceTransformer) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("kind", ["glofnd", "global"])
def test_resumed_run_equals_uninterrupted_run(tiny_model_factory, shared_data, tmp_path, kind):
    path, dataset = tiny_model_factory("bert"), triplets(shared_data)
    full_model, full_loss, _ = run(path, dataset, tmp_path / "full", kind)

    run(path, dataset, tmp_path / "resumed", kind, stop_at=STOP_AT)
    assert (tmp_path / "resumed" / f"checkpoint-{STOP_AT}" / "loss_state.pt").is_file()
    resumed_model, resumed_loss, trainer = run(path, dataset, tmp_path / "resumed", kind, resume=True)

    assert trainer.state.global_step == STEPS
    full_state, resumed_state = loss_state_dict(full_loss), loss_state_dict(resumed_loss)
    assert full_state.keys() == resumed_state.keys() and full_state
    for name in full_state:
        torch.testing.assert_close(resumed_state[name], full_state[name], atol=1e-6, rtol=1e-5, msg=name)
    torch.testing.assert_close(flat_weights(resumed_model), flat_weights(full_model), atol=1e-6, rtol=1e-5)


def test_stock_trainer_loses_the_loss_state(tiny_model_factory, shared_data, tmp_path):
    """Why the subclass exists: the stock trainer resumes with the per-sample state reset."""
    path, dataset = tiny_model_factory("bert"), triplets(shared_data)
    _, full_loss, _ = run(path, dataset, tmp_path / "full", "global")
    run(path, dataset, tmp_path / "stock", "global", trainer_class=SentenceTransformerTrainer, stop_at=STOP_AT)
    _, stock_loss, _ = run(
        path, dataset, tmp_path / "stock", "global", trainer_class=SentenceTransformerTrainer, resume=True
    )
    assert not torch.equal(stock_loss.log_u, full_loss.log_u)


def test_loss_state_skips_the_model_and_checks_shapes(tiny_model_factory):
    model = SentenceTransformer(tiny_model_factory("bert"), device="cpu")
    loss = make_loss("glofnd", model)
    state = loss_state_dict(loss)
    assert state and not any(name.startswith("model.") for name in state)
    assert set(loss_state_dict({"nli": loss})) == {f"nli.{name}" for name in state}
    assert loss_state_dict(MultipleNegativesRankingLoss(model)) == {}

    other = make_loss("glofnd", model)
    state["false_negative_detector.thresholds"] = torch.full((NUM_ROWS, 1), 0.25)
    load_loss_state(other, state)
    assert torch.equal(other.false_negative_detector.thresholds, torch.full((NUM_ROWS, 1), 0.25))
    state["false_negative_detector.thresholds"] = torch.zeros(NUM_ROWS + 1, 1)
    with pytest.raises(ValueError, match="num_samples"):
        load_loss_state(other, state)
    with pytest.raises(ValueError, match="keys only in one"):
        load_loss_state(other, {})
