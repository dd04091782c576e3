"""GlobalContrastiveLoss (SogCLR / FastCLIP) against hand-written objectives, its u updates, schedule and errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from loss_helpers import tiny_model

from st_contrast.losses import GlobalContrastiveLoss, without_sample_state

DIRECTIONS = ("query_to_doc", "doc_to_query")


def g_values(queries, docs, tau):
    """g_i = mean over negatives of exp((s_ij - s_ii) / tau), per direction, written out anchor by anchor."""
    q, d = F.normalize(queries, dim=-1), F.normalize(torch.cat(docs), dim=-1)
    values = {"query_to_doc": [], "doc_to_query": []}
    for i in range(len(q)):
        negatives = [j for j in range(len(d)) if j != i]
        values["query_to_doc"].append(
            torch.stack([((q[i] @ d[j] - q[i] @ d[i]) / tau).exp() for j in negatives]).mean()
        )
        negatives = [j for j in range(len(q)) if j != i]
        values["doc_to_query"].append(
            torch.stack([((d[i] @ q[j] - d[i] @ q[i]) / tau).exp() for j in negatives]).mean()
        )
    return {key: torch.stack(value) for key, value in values.items()}


@pytest.fixture
def model(tiny_model_factory):
    return tiny_model(tiny_model_factory("bert"))


def test_first_visit_gradient_is_the_fastclip_v3_objective_gradient(model):
    """At a first visit u = g exactly, so the estimator is the exact gradient of tau*log(g) + rho*tau."""
    loss_fn = GlobalContrastiveLoss(model, num_samples=10, temperature_scheme="v3", rho=0.5)
    torch.manual_seed(0)
    embeddings = [torch.randn(4, 8, requires_grad=True) for _ in range(3)]
    indices = torch.tensor([9, 2, 5, 0])
    loss = loss_fn.compute_loss_from_embeddings(embeddings, indices)
    loss.backward()

    log_scale = torch.tensor(math.log(1 / 0.07), requires_grad=True)
    reference_embeddings = [e.detach().clone().requires_grad_() for e in embeddings]
    tau = 1 / log_scale.exp()
    g = g_values(reference_embeddings[0], reference_embeddings[1:], tau)
    expected = sum((tau * torch.log(g[key]) + 0.5 * tau).mean() for key in DIRECTIONS)
    expected.backward()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(loss_fn.learned_temperature.logit_scale.grad, log_scale.grad)
    for actual, reference in zip(embeddings, reference_embeddings, strict=True):
        torch.testing.assert_close(actual.grad, reference.grad)
    torch.testing.assert_close(loss_fn.log_u[indices].exp(), torch.stack([g[key] for key in DIRECTIONS], 1).detach())


def test_moving_average_update_and_gradient_weights(model):
    loss_fn = GlobalContrastiveLoss(model, num_samples=6, temperature=0.1, gamma=0.3)
    indices = torch.tensor([0, 1, 2, 3])
    loss_fn.log_u[:2] = torch.tensor([[2.0, 3.0], [0.5, 0.7]]).log()
    loss_fn.seen[:2] = True  # samples 0, 1 were seen before; 2, 3 are first visits (u := g)
    torch.manual_seed(1)
    embeddings = [torch.randn(4, 8, requires_grad=True) for _ in range(2)]
    loss_fn.compute_loss_from_embeddings(embeddings, indices).backward()

    reference_embeddings = [e.detach().clone().requires_grad_() for e in embeddings]
    g = g_values(reference_embeddings[0], reference_embeddings[1:], 0.1)
    previous = torch.tensor([[2.0, 3.0], [0.5, 0.7]])
    expected_u = torch.stack([g[key].detach() for key in DIRECTIONS], dim=1)
    expected_u[:2] = 0.7 * previous + 0.3 * expected_u[:2]
    torch.testing.assert_close(loss_fn.log_u[indices].exp(), expected_u)
    # SogCLR's estimator: tau * grad(g_i) / u_i, averaged over anchors, summed over directions.
    surrogate = sum((0.1 * g[key] / expected_u[:, k]).mean() for k, key in enumerate(DIRECTIONS))
    surrogate.backward()
    for actual, reference in zip(embeddings, reference_embeddings, strict=True):
        torch.testing.assert_close(actual.grad, reference.grad)


def test_gamma_cosine_schedule(model):
    loss_fn = GlobalContrastiveLoss(model, num_samples=4, gamma=0.2, gamma_decay_steps=10)
    assert loss_fn.current_gamma() == pytest.approx(1.0)
    loss_fn.step.fill_(5)
    assert loss_fn.current_gamma() == pytest.approx(0.6)
    loss_fn.step.fill_(12)
    assert loss_fn.current_gamma() == pytest.approx(0.2)


def test_state_is_checkpointed_and_bad_input_is_refused(model):
    loss_fn = GlobalContrastiveLoss(model, num_samples=8)
    embeddings = [torch.randn(4, 8), torch.randn(4, 8)]
    loss_fn.compute_loss_from_embeddings(embeddings, torch.tensor([4, 5, 6, 7]))
    restored = GlobalContrastiveLoss(model, num_samples=8)
    restored.load_state_dict(loss_fn.state_dict())
    assert torch.equal(restored.log_u, loss_fn.log_u) and int(restored.step) == 1 and restored.seen[4:].all()
    with pytest.raises(ValueError, match="add_column\\('label'"):
        loss_fn.compute_loss_from_embeddings(embeddings, None)
    with pytest.raises(ValueError, match="temperature_scheme"):
        GlobalContrastiveLoss(model, num_samples=8, temperature_scheme="cosine")


def test_trains_in_trainer_with_the_sample_index_column(model, snli_sentences, tmp_path):
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    dataset = Dataset.from_dict({"anchor": snli_sentences[:8], "positive": snli_sentences[600:608]})
    dataset = dataset.add_column("label", list(range(8)))
    loss = GlobalContrastiveLoss(model, num_samples=8, temperature_scheme="learnable", gamma_decay_steps=4)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=2, report_to=[], save_strategy="no",
        use_cpu=True,
    )  # fmt: skip
    SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss).train()
    assert int(loss.step) == 2 and loss.seen.all()


@pytest.mark.parametrize("scheme", ["v1", "v2"])
def test_rows_outside_the_training_samples_get_the_batch_only_value(model, scheme):
    """Inside without_sample_state (the trainer's evaluation) u_i = g_i of the batch, v2 uses the mean individual
    temperature of each direction, no labels are needed, and no state is read or written."""
    loss_fn = GlobalContrastiveLoss(model, num_samples=6, temperature=0.05, temperature_scheme=scheme, rho=0.5)
    torch.manual_seed(2)
    for _ in range(3):  # trained state that would change the value if it were read
        loss_fn.compute_loss_from_embeddings([torch.randn(6, 8), torch.randn(6, 8)], torch.arange(6))
    state = {name: value.clone() for name, value in loss_fn.state_dict().items()}
    embeddings = [torch.randn(4, 8), torch.randn(4, 8)]
    with torch.no_grad(), without_sample_state():
        value = loss_fn.compute_loss_from_embeddings(embeddings, None)
    expected = 0.0
    for column, key in enumerate(DIRECTIONS):
        tau = loss_fn.individual_tau[:, column].mean() if scheme == "v2" else torch.tensor(0.05)
        per_anchor = tau * g_values(embeddings[0], embeddings[1:], tau)[key].log()
        expected = expected + (per_anchor + (0.5 * tau if scheme == "v2" else 0.0)).mean()
    torch.testing.assert_close(value, expected)
    for name, before in state.items():
        assert torch.equal(loss_fn.state_dict()[name], before), f"{name} changed"


def test_trainer_evaluation_does_not_touch_the_training_state(model, snli_sentences, tmp_path):
    """An evaluation dataset without a label column: eval_loss is the batch-only value (GloFND masking nothing)."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainingArguments

    from st_contrast import ContrastiveTrainer
    from st_contrast.losses import GloFND

    train = Dataset.from_dict({"anchor": snli_sentences[:8], "positive": snli_sentences[600:608]})
    train = train.add_column("label", list(range(8)))
    evaluation = Dataset.from_dict({"anchor": snli_sentences[300:304], "positive": snli_sentences[900:904]})
    detector = GloFND(num_samples=8, alpha=0.5, start_step=0, lr=0.5)
    loss = GlobalContrastiveLoss(model, num_samples=8, temperature=0.1, false_negative_detector=detector)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=4, per_device_eval_batch_size=4, max_steps=2,
        report_to=[], save_strategy="no", use_cpu=True,
    )  # fmt: skip
    trainer = ContrastiveTrainer(model=model, args=args, train_dataset=train, eval_dataset=evaluation, loss=loss)
    trainer.train()
    state = {name: value.clone() for name, value in loss.state_dict().items()}
    metrics = trainer.evaluate()
    for name, before in state.items():
        assert torch.equal(loss.state_dict()[name], before), f"{name} changed"
    queries = model.encode(evaluation["anchor"], convert_to_tensor=True)
    docs = model.encode(evaluation["positive"], convert_to_tensor=True)
    g = g_values(queries, [docs], 0.1)
    expected = sum((0.1 * g[key].log()).mean() for key in DIRECTIONS)
    assert metrics["eval_loss"] == pytest.approx(float(expected), abs=1e-4)
