"""InfoNCELoss / CachedInfoNCELoss: formula, learnable temperature owned by the loss, GradCache equivalence."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from loss_helpers import assert_same_gradients, embed_like_gradcache, gradients, tiny_model, tokenize_columns
from sentence_transformers import SentenceTransformerTrainingArguments
from sentence_transformers.sentence_transformer.losses import (
    CachedMultipleNegativesRankingLoss,
    MatryoshkaLoss,
    MultipleNegativesRankingLoss,
)

import st_contrast
from st_contrast.losses import CachedInfoNCELoss, InfoNCELoss
from st_contrast.losses.temperature import LearnedTemperature
from st_contrast.modules import LogitScale
from st_contrast.training import LOSS_STATE_NAME


def reference_info_nce(q, docs, log_scale, symmetric=False):
    """Hand-written InfoNCE: softmax over all docs (positives then each negative column); CLIP-symmetric option."""
    scale = log_scale.clamp(max=math.log(100)).exp()
    q, docs = F.normalize(q, dim=-1), [F.normalize(d, dim=-1) for d in docs]
    logits = scale * q @ torch.cat(docs).T
    target = torch.arange(len(q))
    forward = F.cross_entropy(logits, target)
    if not symmetric:
        return forward
    backward = F.cross_entropy(scale * docs[0] @ q.T, target)
    return (forward + backward) / 2


@pytest.fixture
def model(tiny_model_factory):
    return tiny_model(tiny_model_factory("bert"))


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("num_negatives", [0, 2])
def test_formula_and_temperature_gradient(model, symmetric, num_negatives):
    directions = ("query_to_doc", "doc_to_query") if symmetric else ("query_to_doc",)
    partition_mode = "per_direction" if symmetric else "joint"
    loss_fn = InfoNCELoss(model, temperature=0.07, directions=directions, partition_mode=partition_mode)
    torch.manual_seed(1)
    embeddings = [torch.randn(6, 8, requires_grad=True) for _ in range(2 + num_negatives)]
    loss = loss_fn.compute_loss_from_embeddings(embeddings, None)
    loss.backward()

    log_scale = torch.tensor(math.log(1 / 0.07), requires_grad=True)
    reference_embeddings = [e.detach().clone().requires_grad_() for e in embeddings]
    expected = reference_info_nce(reference_embeddings[0], reference_embeddings[1:], log_scale, symmetric)
    expected.backward()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(loss_fn.learned_temperature.logit_scale.grad, log_scale.grad)
    for actual, reference in zip(embeddings, reference_embeddings, strict=True):
        torch.testing.assert_close(actual.grad, reference.grad)


def test_learned_scale_gradient_is_finite_with_masked_directions(model):
    """MNRL masks self-similarities with -inf in the query_to_query / doc_to_doc directions (GTE loss)."""
    directions = ("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc")
    loss_fn = InfoNCELoss(model, temperature=0.05, directions=directions)
    torch.manual_seed(3)
    embeddings = [torch.randn(4, 8) for _ in range(3)]
    loss_fn.compute_loss_from_embeddings(embeddings, None).backward()
    learned = loss_fn.learned_temperature.logit_scale.grad

    log_scale = torch.tensor(math.log(20.0), requires_grad=True)
    fixed = InfoNCELoss(model, temperature=0.05, learnable_temperature=False, directions=directions)
    fixed.scale = log_scale.exp()  # a plain tensor: its gradient would be NaN through the -inf entries
    fixed.compute_loss_from_embeddings(embeddings, None).backward()
    assert torch.isnan(log_scale.grad)
    numeric = []
    for scale in (20.0 * (1 + 1e-3), 20.0 * (1 - 1e-3)):
        fixed.scale = scale
        numeric.append(float(fixed.compute_loss_from_embeddings(embeddings, None)))
    # d loss / d log_scale by central differences: step of log_scale is log(1+1e-3) - log(1-1e-3)
    expected = (numeric[0] - numeric[1]) / (math.log(1 + 1e-3) - math.log(1 - 1e-3))
    assert float(learned) == pytest.approx(expected, rel=1e-3)


def test_fixed_temperature_matches_stock_mnrl(model):
    torch.manual_seed(2)
    embeddings = [torch.randn(5, 8) for _ in range(3)]
    ours = InfoNCELoss(model, temperature=0.05, learnable_temperature=False)
    stock = MultipleNegativesRankingLoss(model, scale=20.0)
    expected = stock.compute_loss_from_embeddings(embeddings, None)
    torch.testing.assert_close(ours.compute_loss_from_embeddings(embeddings, None), expected)
    assert not any(isinstance(module, LogitScale) for module in model)


def test_scale_is_clamped_like_clip(model):
    loss_fn = InfoNCELoss(model, temperature=0.05)
    with torch.no_grad():
        loss_fn.learned_temperature.logit_scale.fill_(math.log(500.0))
    scale = loss_fn.learned_temperature.scale()
    scale.backward()
    assert float(scale.detach()) == pytest.approx(100.0)
    assert loss_fn.learned_temperature.logit_scale.grad == 0
    with pytest.raises(ValueError, match="exceeds max_scale"):
        LearnedTemperature(temperature=0.001)


def test_temperature_belongs_to_the_loss_not_the_saved_model(model, tmp_path):
    loss_fn = InfoNCELoss(model, temperature=0.05)
    assert "learned_temperature.logit_scale" in dict(loss_fn.named_parameters())
    assert not any(isinstance(module, LogitScale) for module in model)
    model.save(str(tmp_path / "saved"))
    assert "st_contrast" not in (tmp_path / "saved" / "modules.json").read_text()


def test_a_model_saved_with_logit_scale_hands_it_to_the_loss(model, tmp_path):
    """st_contrast 0.1 saved the learned temperature as a LogitScale module: such models still load and train."""
    legacy = LogitScale(temperature=0.05)
    with torch.no_grad():
        legacy.logit_scale.fill_(math.log(33.0))
    model.append(legacy)
    sentences = ["A man plays a guitar.", "A dog runs in the park."]
    before = model.encode(sentences, convert_to_tensor=True)
    model.save(str(tmp_path / "legacy"))
    assert "st_contrast.modules.temperature.LogitScale" in (tmp_path / "legacy" / "modules.json").read_text()

    reloaded = st_contrast.load_model(str(tmp_path / "legacy"), device="cpu")
    torch.testing.assert_close(reloaded.encode(sentences, convert_to_tensor=True), before)
    loss_fn = InfoNCELoss(reloaded, temperature=0.05)
    assert loss_fn.temperature == pytest.approx(1 / 33.0)
    assert not any(isinstance(module, LogitScale) for module in reloaded)
    embeddings = [torch.randn(2, 32, requires_grad=True) for _ in range(2)]
    loss_fn.compute_loss_from_embeddings(embeddings, None).backward()
    assert loss_fn.learned_temperature.logit_scale.grad is not None
    reloaded.save(str(tmp_path / "now"))
    assert "st_contrast" not in (tmp_path / "now" / "modules.json").read_text()


@pytest.mark.parametrize("mini_batch_size", [1, 3, 8, 24])  # 24: the whole batch (3 x 8) fits one mini-batch
def test_cached_gradients_equal_uncached_with_dropout(tiny_model_factory, snli_sentences, mini_batch_size):
    path = tiny_model_factory("bert")
    columns = [snli_sentences[:8], snli_sentences[50:58], snli_sentences[90:98]]

    cached_model = tiny_model(path, dropout=True)
    cached_model.train()
    features = tokenize_columns(cached_model, columns)
    first = cached_model(dict(features[0]))["sentence_embedding"]
    assert not torch.allclose(first, cached_model(dict(features[0]))["sentence_embedding"]), "dropout is off"
    cached = CachedInfoNCELoss(cached_model, directions=("query_to_doc", "doc_to_query"), mini_batch_size=3)
    cached.mini_batch_size = mini_batch_size
    torch.manual_seed(123)
    cached([dict(f) for f in features], None).backward()

    reference_model = tiny_model(path, dropout=True)
    reference_model.train()
    reference = InfoNCELoss(reference_model, directions=("query_to_doc", "doc_to_query"))
    torch.manual_seed(123)
    embeddings = embed_like_gradcache(reference_model, [dict(f) for f in features], mini_batch_size)
    reference.compute_loss_from_embeddings(embeddings, None).backward()

    assert_same_gradients(gradients(cached_model), gradients(reference_model))


@pytest.mark.parametrize(
    ("mini_batch_size", "training_forwards", "evaluation_forwards"),
    [(3, 2 * 9 - 1, 9), (8, 2 * 3 - 1, 3), (23, 2 * 3 - 1, 3), (24, 3, 3)],  # 3 columns of 8 texts
)
def test_cached_loss_embeds_each_mini_batch_twice_except_the_first(
    tiny_model_factory, snli_sentences, mini_batch_size, training_forwards, evaluation_forwards
):
    """GradCache embeds every mini-batch without gradients, then again with them; the first mini-batch's graph is
    kept from the first pass instead, and a batch that fits one mini-batch (24 texts) is embedded once."""
    model = tiny_model(tiny_model_factory("bert"))
    features = tokenize_columns(model, [snli_sentences[:8], snli_sentences[50:58], snli_sentences[90:98]])
    calls = []
    model[0].register_forward_hook(lambda module, args, output: calls.append(torch.is_grad_enabled()))
    loss_fn = CachedInfoNCELoss(model, mini_batch_size=mini_batch_size)
    loss_fn([dict(f) for f in features], None).backward()
    assert len(calls) == training_forwards
    calls.clear()
    with torch.no_grad():  # evaluation: one pass per mini-batch
        loss_fn([dict(f) for f in features], None)
    assert calls == [False] * evaluation_forwards


def test_two_cached_evaluations_before_one_backward_match_stock_cached_mnrl(tiny_model_factory, snli_sentences):
    """Two batches' losses summed into one backward: the second evaluation takes over the kept first mini-batch, so
    the first one's must be replayed with its own dropout masks (stock CachedMNRL hands each hook its own cache)."""
    path = tiny_model_factory("bert")
    batches = [[snli_sentences[:8], snli_sentences[50:58]], [snli_sentences[100:108], snli_sentences[150:158]]]
    results = []
    for stock in (True, False):
        model = tiny_model(path, dropout=True)
        model.train()
        if stock:
            loss_fn = CachedMultipleNegativesRankingLoss(model, scale=20.0, mini_batch_size=4)
        else:
            loss_fn = CachedInfoNCELoss(model, temperature=0.05, learnable_temperature=False, mini_batch_size=4)
        torch.manual_seed(123)
        losses = [loss_fn([dict(f) for f in tokenize_columns(model, columns)], None) for columns in batches]
        sum(losses).backward()
        results.append(([loss.detach() for loss in losses], gradients(model)))
    torch.testing.assert_close(results[1][0], results[0][0])
    assert_same_gradients(results[1][1], results[0][1])


@pytest.mark.parametrize("mini_batch_size", [2, 5, 20])  # 20: the whole batch (2 x 10) fits one mini-batch
def test_cached_gradients_equal_uncached_under_matryoshka(tiny_model_factory, snli_sentences, mini_batch_size):
    path = tiny_model_factory("bert")
    columns = [snli_sentences[:10], snli_sentences[60:70]]
    results = []
    for cached in (False, True):
        model = tiny_model(path)
        inner = CachedInfoNCELoss(model, mini_batch_size=mini_batch_size) if cached else InfoNCELoss(model)
        loss_fn = MatryoshkaLoss(model, inner, matryoshka_dims=[32, 16, 8])
        loss = loss_fn([dict(f) for f in tokenize_columns(model, columns)], None)
        loss.backward()
        results.append((loss.detach(), gradients(model)))
    torch.testing.assert_close(results[1][0], results[0][0])
    assert_same_gradients(results[1][1], results[0][1])


def test_trains_in_trainer_and_checkpoints_temperature(tiny_model_factory, snli_sentences, tmp_path):
    model = tiny_model(tiny_model_factory("bert"))
    dataset = Dataset.from_dict({"anchor": snli_sentences[:16], "positive": snli_sentences[200:216]})
    loss = CachedInfoNCELoss(model, temperature=0.05, mini_batch_size=4)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=8,
        max_steps=2,
        learning_rate=0.05,
        report_to=[],
        save_strategy="steps",
        save_steps=2,
        use_cpu=True,
    )
    st_contrast.ContrastiveTrainer(model=model, args=args, train_dataset=dataset, loss=loss, monitoring=False).train()
    assert loss.temperature != pytest.approx(0.05), "the temperature was not trained"
    assert loss.get_config_dict()["temperature"] == pytest.approx(loss.temperature)
    state = torch.load(tmp_path / "out" / "checkpoint-2" / LOSS_STATE_NAME, weights_only=True)
    assert math.exp(-float(state["loss.learned_temperature.logit_scale"])) == pytest.approx(loss.temperature)
    assert "st_contrast" not in (tmp_path / "out" / "checkpoint-2" / "modules.json").read_text()
