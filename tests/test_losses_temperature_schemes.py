"""FastCLIP's temperature schemes v0 and v2 against hand-written objectives, and temperature hygiene in the trainer."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from loss_helpers import tiny_model
from sentence_transformers import SentenceTransformerTrainingArguments

from st_contrast import ContrastiveTrainer
from st_contrast.losses import GlobalContrastiveLoss, InfoNCELoss, SigLIPLoss

DIRECTIONS = ("query_to_doc", "doc_to_query")


@pytest.fixture
def model(tiny_model_factory):
    return tiny_model(tiny_model_factory("bert"))


def g_of(matrix, i, tau):
    """g_i(tau) = mean over the other columns of exp((s_ij - s_ii) / tau)."""
    others = [j for j in range(matrix.size(1)) if j != i]
    return torch.stack([((matrix[i, j] - matrix[i, i]) / tau).exp() for j in others]).mean()


def matrices(q, d):
    sims = F.normalize(q, dim=-1) @ F.normalize(d, dim=-1).T
    return sims, sims.T


def test_v0_is_the_gradient_of_log_g_in_the_model_and_the_temperature(model):
    loss_fn = GlobalContrastiveLoss(model, num_samples=8, temperature=0.1, temperature_scheme="v0")
    torch.manual_seed(5)
    q, d = torch.randn(4, 8, requires_grad=True), torch.randn(4, 8, requires_grad=True)
    loss = loss_fn.compute_loss_from_embeddings([q, d], torch.tensor([1, 5, 2, 7]))
    loss.backward()

    rq, rd = q.detach().clone().requires_grad_(), d.detach().clone().requires_grad_()
    log_tau = torch.tensor(math.log(10.0), requires_grad=True)  # the parameter: log(1 / tau)
    tau = 1 / log_tau.exp()
    expected = sum(torch.stack([torch.log(g_of(m, i, tau)) for i in range(4)]).mean() for m in matrices(rq, rd))
    expected.backward()
    torch.testing.assert_close(loss, expected)  # first visit: u = g
    torch.testing.assert_close(q.grad, rq.grad)
    torch.testing.assert_close(d.grad, rd.grad)
    torch.testing.assert_close(loss_fn.learned_temperature.logit_scale.grad, log_tau.grad)


def test_v2_individual_temperatures_take_the_isogclr_step(model):
    rho, lr, beta, tau0 = 7.0, 0.0133, 0.9, 0.03
    loss_fn = GlobalContrastiveLoss(model, num_samples=6, temperature=tau0, temperature_scheme="v2", rho=rho,
                                    temperature_lr=lr, temperature_beta=beta, max_temperature=0.5)  # fmt: skip
    torch.manual_seed(6)
    q, d = torch.randn(3, 8, requires_grad=True), torch.randn(3, 8, requires_grad=True)
    indices = torch.tensor([4, 0, 2])
    loss = loss_fn.compute_loss_from_embeddings([q, d], indices)
    loss.backward()

    rq, rd = q.detach().clone().requires_grad_(), d.detach().clone().requires_grad_()
    objective = 0.0
    for column, matrix in enumerate(matrices(rq, rd)):
        per_anchor = []
        for i, index in enumerate(indices.tolist()):
            # d/d tau of the anchor's RGCL term tau * log g(tau) + rho * tau, at its current tau (first visit: u = g)
            tau = torch.tensor(tau0, requires_grad=True)
            term = tau * torch.log(g_of(matrix.detach(), i, tau)) + rho * tau
            (grad,) = torch.autograd.grad(term, tau)
            expected_tau = min(max(tau0 - lr * beta * float(grad), 0.005), 0.5)
            assert float(loss_fn.individual_tau[index, column]) == pytest.approx(expected_tau, rel=1e-5)
            per_anchor.append(tau0 * torch.log(g_of(matrix, i, torch.tensor(tau0))) + rho * tau0)
        objective = objective + torch.stack(per_anchor).mean()
    objective.backward()
    torch.testing.assert_close(loss, objective)
    torch.testing.assert_close(q.grad, rq.grad)
    torch.testing.assert_close(d.grad, rd.grad)


def test_scheme_names_and_gamma_decay_in_epochs(model):
    assert GlobalContrastiveLoss(model, num_samples=4, temperature_scheme="constant").temperature_scheme == "v1"
    assert GlobalContrastiveLoss(model, num_samples=4, temperature_scheme="learnable").temperature_scheme == "v3"
    with pytest.raises(ValueError, match="temperature_scheme must be one of"):
        GlobalContrastiveLoss(model, num_samples=4, temperature_scheme="v4")
    loss_fn = GlobalContrastiveLoss(model, num_samples=4, gamma=0.2, gamma_decay_epochs=4)
    for epoch, expected in ((0.0, 1.0), (1.7, 0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi / 4))), (4.2, 0.2)):
        loss_fn.set_progress(step=0, epoch=epoch)  # FastCLIP's schedule moves at epoch boundaries
        assert loss_fn.current_gamma() == pytest.approx(expected)
    with pytest.raises(RuntimeError, match="ContrastiveTrainer"):
        GlobalContrastiveLoss(model, num_samples=4, gamma_decay_epochs=4).current_gamma()


def trainer_for(model, loss, tmp_path, **arguments):
    dataset = Dataset.from_dict({"anchor": ["a b", "c d", "e f", "g h"], "positive": ["b a", "d c", "f e", "h g"]})
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=4, report_to=[], save_strategy="no", use_cpu=True,
        **arguments,
    )  # fmt: skip
    return ContrastiveTrainer(model=model, args=args, train_dataset=dataset, loss=loss, monitoring=False)


def test_temperature_is_not_weight_decayed(model, tmp_path):
    loss = InfoNCELoss(model, temperature=0.05)
    trainer = trainer_for(model, loss, tmp_path, weight_decay=0.1, learning_rate=0.1)
    decayed = trainer.get_decay_parameter_names(loss)
    assert "learned_temperature.logit_scale" not in decayed
    assert any(name.endswith("query.weight") for name in decayed)

    optimizer = trainer.create_optimizer()
    weight = next(p for n, p in loss.named_parameters() if n.endswith("query.weight"))
    before = {"temperature": loss.learned_temperature.logit_scale.detach().clone(), "weight": weight.detach().clone()}
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            parameter.grad = torch.zeros_like(parameter)  # no loss gradient at all: only decay could move them
    optimizer.step()
    assert torch.equal(loss.learned_temperature.logit_scale.detach(), before["temperature"])
    assert not torch.equal(weight.detach(), before["weight"])  # the control: decayed weights shrink


def test_each_step_gets_the_temperature_gradient_of_its_own_batch_only(model, tmp_path):
    """The trainer clears loss-owned gradients after every step (sentence-transformers < 6.2 left them to pile up)."""
    from transformers import TrainerCallback

    class RecordGradient(TrainerCallback):
        gradients: list[float] = []

        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            self.gradients.append(float(loss.learned_temperature.logit_scale.grad))

    loss = InfoNCELoss(model, temperature=0.05)
    trainer = trainer_for(model, loss, tmp_path, learning_rate=0.0, max_steps=3)  # one unchanged batch every step
    for callback in list(trainer.callback_handler.callbacks):
        if type(callback).__name__ == "_OptimizerZeroGradCallback":  # sentence-transformers' own fix (>= 6.2): out
            trainer.remove_callback(callback)
    trainer.add_callback(RecordGradient())
    trainer.train()
    first = RecordGradient.gradients[0]
    assert first != 0.0 and RecordGradient.gradients == pytest.approx([first] * 3, rel=1e-4)


def test_temperature_lr_gets_its_own_group_and_the_scale_is_clamped(model, tmp_path):
    loss = SigLIPLoss(model, temperature_lr=1e-4)
    trainer = trainer_for(model, loss, tmp_path, learning_rate=1e-3, max_steps=1)
    optimizer = trainer.create_optimizer()
    (group,) = [
        g for g in optimizer.param_groups if any(p is loss.learned_temperature.logit_scale for p in g["params"])
    ]
    assert group["lr"] == 1e-4 and group["weight_decay"] == 0.0
    assert any(p is loss.learned_temperature.logit_bias for p in group["params"])
    assert all(len(g["params"]) for g in optimizer.param_groups)

    trainer.optimizer = None
    with torch.no_grad():
        loss.learned_temperature.logit_scale.fill_(math.log(500.0))  # above CLIP's clamp of 100
    trainer.train()
    assert float(loss.learned_temperature.logit_scale) == pytest.approx(math.log(100.0))
