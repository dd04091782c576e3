"""GlobalContrastiveLoss (SogCLR / FastCLIP) against hand-written objectives, its u updates, schedule and errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from loss_helpers import tiny_model

from st_contrast.losses import GlobalContrastiveLoss

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
