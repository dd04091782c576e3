"""freeze / lock: frozen parts never move under an optimizer step; locked towers stay in eval mode."""

from __future__ import annotations

import pytest
import torch
from adapter_utils import changed_parameters, embed, snapshot, train_steps
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Transformer
from sentence_transformers.sentence_transformer.modules import Pooling

from st_contrast.adapters import freeze, lock
from st_contrast.modules import FlashTransformer
from st_contrast.recipes import asymmetric_model

# Parameter-name prefixes of the embedding block and the first layer, written out per architecture.
FROZEN_PREFIXES = {
    "bert": ("0.model.embeddings.", "0.model.encoder.layer.0."),
    "llama": ("0.model.embed_tokens.", "0.model.layers.0."),
    "modernbert": ("0.model.embeddings.", "0.model.layers.0."),
}


@pytest.mark.parametrize("model_type", sorted(FROZEN_PREFIXES))
def test_frozen_embeddings_and_first_layer_do_not_move(model_type, tiny_model_factory, snli_sentences):
    backbone = FlashTransformer(tiny_model_factory(model_type))
    model = SentenceTransformer(modules=[backbone, Pooling(32, "mean")], device="cpu")
    count = freeze(model, embeddings=True, layers=1)
    frozen = {n for n in dict(model.named_parameters()) if n.startswith(FROZEN_PREFIXES[model_type])}
    assert count.total - count.trainable == sum(p.numel() for n, p in model.named_parameters() if n in frozen)

    before = snapshot(model)
    train_steps(model, snli_sentences[:8], snli_sentences[8:16])
    changed = changed_parameters(before, model)
    assert not changed & frozen
    later_layer = "0.model.encoder.layer.1." if model_type == "bert" else "0.model.layers.1."
    assert any(name.startswith(later_layer) for name in changed)


def test_layer_count_out_of_range(tiny_model_factory):
    model = SentenceTransformer(modules=[Transformer(tiny_model_factory("bert")), Pooling(32)], device="cpu")
    with pytest.raises(ValueError, match="layers=3 is out of range: BertModel has 2 layers; pass 0 to 2"):
        freeze(model, layers=3)


def test_locked_tower_stays_fixed_and_in_eval_mode(minilm_path, snli_sentences):
    model = asymmetric_model(minilm_path, device="cpu")
    router = model[0]
    query_tower, document_tower = router.sub_modules["query"], router.sub_modules["document"]
    lock(document_tower)
    model.train()
    assert not document_tower.training and query_tower.training
    # Dropout is off in the locked tower even in training mode: two forward passes agree.
    features = model.preprocess(snli_sentences[:4], task="document")
    with torch.no_grad():
        first = model(dict(features))["sentence_embedding"]
        second = model(dict(features))["sentence_embedding"]
    torch.testing.assert_close(first, second)

    before = snapshot(model)
    train_steps(model, snli_sentences[:8], snli_sentences[8:16], lr=1e-4, anchor_task="query", positive_task="document")
    changed = changed_parameters(before, model)
    assert changed and all(name.startswith("0.sub_modules.query.") for name in changed), sorted(changed)[:5]


def test_frozen_model_survives_save_and_reload(tiny_model_factory, snli_sentences, tmp_path):
    model = SentenceTransformer(modules=[Transformer(tiny_model_factory("bert")), Pooling(32)], device="cpu")
    freeze(model, embeddings=True, layers=1)
    train_steps(model, snli_sentences[:8], snli_sentences[8:16])
    model.save(str(tmp_path / "frozen"))
    reloaded = SentenceTransformer(str(tmp_path / "frozen"), device="cpu")
    torch.testing.assert_close(embed(reloaded, snli_sentences[:8]), embed(model, snli_sentences[:8]))
