"""SigLIPLoss and CLIPLoss against hand-written formulas; both train in the trainer and save their parameters."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from loss_helpers import tiny_model
from sentence_transformers import SentenceTransformerTrainingArguments
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

from st_contrast import ContrastiveTrainer
from st_contrast.losses import CLIPLoss, SigLIPLoss
from st_contrast.modules import LogitScale
from st_contrast.training import LOSS_STATE_NAME, load_loss_state


def reference_siglip(x, ys, log_scale, bias):
    """SigLIP paper, Algorithm 1, written out pair by pair (negatives are extra candidate columns)."""
    x, y = F.normalize(x, dim=-1), F.normalize(torch.cat(ys), dim=-1)
    total = 0.0
    for i in range(len(x)):
        for j in range(len(y)):
            label = 1.0 if i == j else -1.0
            logit = log_scale.exp() * torch.dot(x[i], y[j]) + bias
            total = total - torch.log(torch.sigmoid(label * logit))
    return total / len(x)


@pytest.fixture
def model(tiny_model_factory):
    return tiny_model(tiny_model_factory("bert"))


@pytest.mark.parametrize("num_columns", [2, 3])
def test_siglip_formula_and_parameter_gradients(model, num_columns):
    loss_fn = SigLIPLoss(model)
    torch.manual_seed(0)
    embeddings = [torch.randn(5, 8) for _ in range(num_columns)]
    loss = loss_fn.compute_loss_from_embeddings(embeddings, None)
    loss.backward()
    log_scale = torch.tensor(math.log(10.0), requires_grad=True)
    bias = torch.tensor(-10.0, requires_grad=True)
    expected = reference_siglip(embeddings[0], embeddings[1:], log_scale, bias)
    expected.backward()
    torch.testing.assert_close(loss, expected)
    module = loss_fn.learned_temperature
    torch.testing.assert_close(module.logit_scale.grad, log_scale.grad)
    torch.testing.assert_close(module.logit_bias.grad, bias.grad)


def test_siglip_rejects_a_single_column(model):
    with pytest.raises(ValueError, match="anchor, positive"):
        SigLIPLoss(model).compute_loss_from_embeddings([torch.randn(3, 8)], None)


def test_clip_is_symmetric_cross_entropy(model):
    loss_fn = CLIPLoss(model)
    torch.manual_seed(1)
    q, d = torch.randn(6, 8), torch.randn(6, 8)
    logits = (1 / 0.07) * F.normalize(q, dim=-1) @ F.normalize(d, dim=-1).T
    target = torch.arange(6)
    expected = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    torch.testing.assert_close(loss_fn.compute_loss_from_embeddings([q, d], None), expected)
    stock = MultipleNegativesRankingLoss(
        model, scale=1 / 0.07, directions=("query_to_doc", "doc_to_query"), partition_mode="per_direction"
    )
    torch.testing.assert_close(stock.compute_loss_from_embeddings([q, d], None), expected)


def test_siglip_scale_and_bias_train_and_resume_with_the_loss_state(model, snli_sentences, tmp_path):
    dataset = Dataset.from_dict({"anchor": snli_sentences[:8], "positive": snli_sentences[300:308]})
    loss = SigLIPLoss(model)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, max_steps=2, learning_rate=0.05,
        report_to=[], save_strategy="steps", save_steps=2, use_cpu=True,
    )  # fmt: skip
    ContrastiveTrainer(model=model, args=args, train_dataset=dataset, loss=loss, monitoring=False).train()
    bias = float(loss.learned_temperature.logit_bias.detach())
    assert bias != pytest.approx(-10.0)
    assert not any(isinstance(module, LogitScale) for module in model)

    fresh = SigLIPLoss(model)
    load_loss_state(fresh, torch.load(tmp_path / "out" / "checkpoint-2" / LOSS_STATE_NAME, weights_only=True))
    assert float(fresh.learned_temperature.logit_bias.detach()) == pytest.approx(bias)
    assert fresh.temperature == pytest.approx(loss.temperature)
