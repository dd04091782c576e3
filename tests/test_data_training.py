"""End to end: SentenceTransformerTrainer on a 2-dataset mixture with the st_contrast samplers, prompts and indices."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from loss_helpers import tiny_model
from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

from st_contrast.data import (
    SamplerEpochCallback,
    SingleDatasetBatchSampler,
    TokenBudgetBatchSampler,
    build_training_data,
)
from st_contrast.losses import GloFND, InfoNCELoss


def mixture(shared_data, tmp_path, add_sample_index=False, rows=(48, 32)):
    nli = shared_data / "nli" / "derived"
    return build_training_data(
        [
            {"name": "nli", "path": str(nli / "triplets.tsv.gz"), "objective": "triplet", "max_rows": rows[0],
             "query_prefix": "classification"},
            {"name": "pairs", "path": str(nli / "pairs_entailment.tsv.gz"), "objective": "paired", "max_rows": rows[1],
             "query_prefix": "search_query", "document_prefix": "search_document"},
        ],
        add_sample_index=add_sample_index,
        cache_dir=str(tmp_path / "hf_cache"),
    )  # fmt: skip


class RecordingCollator:
    """Wraps the trainer's collator and records each batch's rows and tokenized output."""

    def __init__(self, collator):
        self.collator, self.batches = collator, []

    def __getattr__(self, name):
        return getattr(self.collator, name)

    def __call__(self, features):
        output = self.collator(features)
        self.batches.append(([dict(row) for row in features], output))
        return output


def make_trainer(model, data, loss, tmp_path, epoch_callback=True, **overrides):
    settings = {
        "output_dir": str(tmp_path / "out"),
        "per_device_train_batch_size": 8,
        "learning_rate": 1e-3,
        "max_steps": 4,
        "report_to": [],
        "save_strategy": "no",
        "use_cpu": True,
        "seed": 7,
        "prompts": data.prompts,
        "batch_sampler": partial(TokenBudgetBatchSampler, max_tokens=8 * 24, tokenizer=model, prompts=data.prompts),
        "multi_dataset_batch_sampler": SingleDatasetBatchSampler,
    }
    args = SentenceTransformerTrainingArguments(**{**settings, **overrides})
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=data.dataset, loss=loss)
    trainer.data_collator = RecordingCollator(trainer.data_collator)
    if epoch_callback:
        trainer.add_callback(SamplerEpochCallback())
    return trainer


def test_mixture_trains_with_prompts_one_dataset_per_batch_and_token_budget(tiny_model_factory, shared_data, tmp_path):
    model = tiny_model(tiny_model_factory("bert"))
    data = mixture(shared_data, tmp_path)
    before = [p.detach().clone() for p in model.parameters()]
    trainer = make_trainer(model, data, MultipleNegativesRankingLoss(model), tmp_path)
    trainer.train()
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters(), strict=True))

    prompts = {"nli": "classification: ", "pairs": None}
    seen = set()
    for features, output in trainer.data_collator.batches:
        names = {row["dataset_name"] for row in features}
        assert len(names) == 1, "a batch mixes datasets"
        name = names.pop()
        seen.add(name)
        for column in [key for key in features[0] if key != "dataset_name"]:
            prefix = data.prompts[name][column]
            if name == "nli":
                assert prefix == prompts["nli"]
            # the reference: tokenize the manually prefixed texts; the trainer's batch must hold exactly these ids
            expected = model.tokenize([prefix + row[column] for row in features])["input_ids"]
            assert torch.equal(output[f"{column}_input_ids"], expected), (name, column)
            assert output[f"{column}_input_ids"].numel() <= 8 * 24  # the token budget holds for every column
    assert data.prompts["pairs"] == {"anchor": "search_query: ", "positive": "search_document: "}
    assert seen == {"nli", "pairs"}


def test_glofnd_reads_the_sample_index_column_of_a_mixture(tiny_model_factory, shared_data, tmp_path):
    model = tiny_model(tiny_model_factory("bert"))
    data = mixture(shared_data, tmp_path, add_sample_index=True)
    detector = GloFND(num_samples=data.num_samples)
    loss = InfoNCELoss(model, false_negative_detector=detector)
    trainer = make_trainer(model, data, loss, tmp_path)
    trainer.train()
    labels = torch.cat([output["label"] for _, output in trainer.data_collator.batches])
    texts = {name: list(data.dataset[name]["anchor"]) for name in data.names}
    offsets = {"nli": 0, "pairs": len(data.dataset["nli"])}
    for features, output in trainer.data_collator.batches:  # each label is the row's own global index
        name = features[0]["dataset_name"]
        for row, label in zip(features, output["label"].tolist(), strict=True):
            assert texts[name][label - offsets[name]] == row["anchor"]
    # the batches the trainer consumed (the collator also prepares one batch ahead) updated exactly their rows
    updated = set(torch.nonzero(detector.sample_steps.any(dim=1)).flatten().tolist())  # rows, one column per direction
    assert updated and updated <= set(labels.tolist())
    assert int(detector.step) == 4


def test_resume_continues_the_sampler_order_from_the_checkpoint(tiny_model_factory, shared_data, tmp_path):
    data = mixture(shared_data, tmp_path, rows=(24, 16))

    def trainer_for(save_steps, max_steps):
        model = tiny_model(tiny_model_factory("bert"))
        overrides = {"max_steps": max_steps, "save_strategy": "steps", "save_steps": save_steps}
        return make_trainer(model, data, MultipleNegativesRankingLoss(model), tmp_path, **overrides)

    steps_per_epoch = len(trainer_for(1, 1).get_train_dataloader())
    checkpoint = steps_per_epoch + 1  # in the second epoch: the resumed run must continue that epoch's order

    def run(resume=None):
        trainer = trainer_for(checkpoint, checkpoint + 2)
        trainer.train(resume_from_checkpoint=resume)
        return [[row["anchor"] for row in features] for features, _ in trainer.data_collator.batches]

    full = run()
    assert full[:2] != full[steps_per_epoch : steps_per_epoch + 2], "the second epoch repeats the first one's order"
    resumed = run(resume=str(tmp_path / "out" / f"checkpoint-{checkpoint}"))
    assert resumed[:2] == full[checkpoint : checkpoint + 2], "the resumed run did not continue where it stopped"


@pytest.mark.slow
def test_two_ranks_train_on_the_same_dataset_per_step_with_different_rows_and_resume(two_process_runs):
    import json

    folder = two_process_runs["distributed_data_worker"]
    ranks = [json.loads((folder / f"rank{rank}.json").read_text()) for rank in range(2)]
    steps = ranks[0]["steps"]
    assert steps == ranks[1]["steps"] < 8, "the checkpoint (step 8) should fall in the second epoch"
    for step in range(10):  # every trained step, both epochs
        batch0, batch1 = ranks[0]["full"][step], ranks[1]["full"][step]
        assert batch0["dataset"] == batch1["dataset"], f"step {step}: the ranks trained on different datasets"
        assert not set(batch0["rows"]) & set(batch1["rows"]), f"step {step}: the ranks share rows"
        assert len(batch0["rows"]) == len(batch1["rows"]), f"step {step}: uneven batch sizes"
    assert {batch["dataset"] for batch in ranks[0]["full"][:10]} == {"nli", "pairs"}
    for rank in ranks:  # resumed from checkpoint-8 (mid second epoch): steps 9 and 10 are the original ones
        assert rank["resumed"][:2] == rank["full"][8:10]
