"""Batch samplers: one dataset per global batch on every rank, token budgets, no duplicates, determinism, resume."""

from __future__ import annotations

import csv
import gzip
import itertools

import numpy as np
import pytest
import torch
from accelerate.data_loader import BatchSamplerShard, prepare_data_loader, skip_first_batches
from datasets import Dataset
from sentence_transformers.base.sampler import DefaultBatchSampler, NoDuplicatesBatchSampler
from torch.utils.data import ConcatDataset, DataLoader, RandomSampler

from st_contrast.data import SingleDatasetBatchSampler, TokenBudgetBatchSampler, set_sampler_epoch, single_dataset


def _texts(prefix: str, n: int) -> Dataset:
    return Dataset.from_dict({"anchor": [f"{prefix} {i} " + "word " * (i % 13) for i in range(n)]})


def _multi(sizes=(50, 130, 20), batch_size=8, world_size=2, sub=None, **kwargs) -> SingleDatasetBatchSampler:
    parts = [_texts(f"d{i}", n) for i, n in enumerate(sizes)]
    generator = torch.Generator()
    subs = [
        sub(part) if sub else DefaultBatchSampler(RandomSampler(part, generator=generator), batch_size, drop_last=False)
        for part in parts
    ]
    concatenated = ConcatDataset(parts)
    return SingleDatasetBatchSampler(concatenated, subs, generator=generator, seed=3, world_size=world_size, **kwargs)


def _dataset_of(batch: list[int], bounds: list[int]) -> int:
    owners = {int(np.searchsorted(bounds, row, side="right")) - 1 for row in batch}
    assert len(owners) == 1, f"batch {batch} mixes datasets {owners}"
    return owners.pop()


def test_every_group_of_world_size_batches_comes_from_one_dataset():
    sampler = _multi()
    bounds = [0, 50, 180, 200]
    batches = list(sampler)
    assert len(batches) == len(sampler) == 2 * (7 // 2 + 17 // 2 + 3 // 2)
    for first, second in zip(batches[::2], batches[1::2], strict=True):
        assert _dataset_of(first, bounds) == _dataset_of(second, bounds)
        assert len(first) == len(second), "ranks of one step must get equal batch sizes (gather_across_devices)"
    rows = list(itertools.chain(*batches))
    assert len(rows) == len(set(rows)), "a row was used twice in one epoch"
    order = sampler.dataset_order()
    assert sorted(order) == [0] * 3 + [1] * 8 + [2] * 1  # proportional: each dataset's whole groups
    assert order != sorted(order), "the datasets are not interleaved"


def test_two_ranks_under_accelerate_see_the_same_dataset_and_different_rows():
    bounds = [0, 50, 180, 200]
    for sub in (None, lambda part: TokenBudgetBatchSampler(part, batch_size=8, max_tokens=40, world_size=2)):
        sampler = _multi(sub=sub)
        ranks = [list(BatchSamplerShard(sampler, 2, rank, even_batches=False)) for rank in range(2)]
        assert len(ranks[0]) == len(ranks[1]) == len(sampler) // 2  # nothing dropped, nothing padded
        for step, (batch0, batch1) in enumerate(zip(*ranks, strict=True)):
            assert _dataset_of(batch0, bounds) == _dataset_of(batch1, bounds), f"step {step}: ranks on two datasets"
            assert not set(batch0) & set(batch1), f"step {step}: ranks share rows"
            assert len(batch0) == len(batch1)
        assert sorted(itertools.chain(*ranks[0], *ranks[1])) == sorted(itertools.chain(*sampler))


def test_weights_split_the_same_number_of_groups_by_weight_and_cycle_small_datasets():
    sampler = _multi(weights=[1, 1, 2])
    total_groups = 3 + 8 + 1
    assert sampler.groups_per_dataset == [3, 3, 6] and len(sampler) == 2 * total_groups
    bounds = [0, 50, 180, 200]
    owners = [_dataset_of(batch, bounds) for batch in sampler]
    assert owners.count(2) == 12  # dataset 2 has one group per pass: its sampler restarts
    with pytest.raises(ValueError, match="3 positive numbers"):
        _multi(weights=[1, 2])


def test_with_weights_the_ranks_of_a_step_never_share_rows(monkeypatch):
    """A dataset that needs several passes starts each group in one pass (a group across two passes could hold a row
    twice), and one with fewer batches than ranks is left out with a warning, as without weights (its one batch was
    given to every rank)."""
    warnings = []
    monkeypatch.setattr(single_dataset.logger, "warning", warnings.append)
    shuffled = _multi(weights=[1, 1, 2])  # dataset 2: 3 batches, one group per pass
    seeded = _multi(
        sizes=(64, 12),
        sub=lambda part: NoDuplicatesBatchSampler(
            part, batch_size=8, drop_last=True, generator=torch.Generator(), seed=3
        ),
        weights=[1, 1],
    )  # dataset 1: 1 batch for 2 ranks
    assert warnings == ["Dataset(s) [1] have fewer than 2 batches (one per rank) and are not trained on."]
    assert seeded.groups_per_dataset == [4, 0]
    for sampler in (shuffled, seeded):
        bounds = [0, *sampler.dataset.cumulative_sizes]
        for epoch in range(3):
            sampler.set_epoch(epoch)
            batches = list(sampler)
            assert len(batches) == len(sampler)
            for step, (first, second) in enumerate(zip(batches[::2], batches[1::2], strict=True)):
                assert _dataset_of(first, bounds) == _dataset_of(second, bounds)
                assert not set(first) & set(second), f"epoch {epoch} step {step}: the ranks share rows"


def test_world_size_defaults_to_one_process_and_groups_need_one_batch_per_rank():
    assert _multi(world_size=None).world_size == 1
    with pytest.raises(ValueError, match="No dataset has 4 batches"):
        _multi(sizes=(10, 10), world_size=4)


def test_deterministic_per_epoch_and_resume_by_skipping_reproduces_the_order():
    first, again = _multi(), _multi()  # a fresh sampler in a resumed process
    epoch0 = list(first)
    assert list(again) == epoch0 == list(first)
    first.set_epoch(1)
    epoch1 = list(first)
    assert epoch1 != epoch0
    again.set_epoch(1)
    loader = DataLoader(again.dataset, batch_sampler=again, collate_fn=lambda rows: rows)
    assert [[row["anchor"] for row in batch] for batch in skip_first_batches(loader, 5)] == [
        [again.dataset[i]["anchor"] for i in batch] for batch in epoch1[5:]
    ]


def test_set_sampler_epoch_reaches_the_sampler_behind_accelerate_and_skip_wrappers():
    sampler = _multi()
    loader = DataLoader(sampler.dataset, batch_sampler=sampler, collate_fn=lambda rows: rows)
    prepared = prepare_data_loader(loader, num_processes=2, process_index=1, put_on_device=False, even_batches=False)
    resumed = skip_first_batches(prepared, 3)  # what Trainer does when resuming mid-epoch
    assert set_sampler_epoch(resumed, 4) >= 1
    assert sampler.epoch == 4 and all(sub.epoch == 4 for sub in sampler.batch_samplers)
    expected = list(sampler)[1::2][3:]
    got = [[row["anchor"] for row in batch] for batch in resumed]
    assert got == [[sampler.dataset[i]["anchor"] for i in batch] for batch in expected]


def test_seeded_per_dataset_samplers_shuffle_anew_every_epoch():
    """ST's NoDuplicatesBatchSampler reseeds the shared generator from its own epoch: set_epoch must reach it."""
    sampler = _multi(sub=lambda part: NoDuplicatesBatchSampler(part, 8, drop_last=False, generator=torch.Generator()))

    def rows_per_dataset(epoch: int) -> list[list[int]]:
        set_sampler_epoch(sampler, epoch)
        rows = list(itertools.chain(*sampler))
        return [[row for row in rows if low <= row < high] for low, high in ((0, 50), (50, 180), (180, 200))]

    first, second = rows_per_dataset(0), rows_per_dataset(1)
    assert all(a != b for a, b in zip(first, second, strict=True)), "a dataset repeated its row order"
    assert rows_per_dataset(0) == first, "an epoch's order must depend on the epoch only"


# --- TokenBudgetBatchSampler on the shared NLI triplets, measured with MiniLM's tokenizer -------------------------


@pytest.fixture(scope="module")
def nli(shared_data, minilm_path):
    from transformers import AutoTokenizer

    with gzip.open(shared_data / "nli" / "derived" / "triplets.tsv.gz", "rt", encoding="utf8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    dataset = Dataset.from_dict({key: [row[key] for row in rows] for key in ("anchor", "positive", "negative")})
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    lengths = {
        column: np.array([len(ids) for ids in tokenizer(list(dataset[column]))["input_ids"]])
        for column in dataset.column_names
    }
    return dataset, tokenizer, lengths


def _padding(batches, lengths) -> tuple[float, int]:
    """Padding fraction over all columns and the largest padded tokens of one column of one batch."""
    real = padded = largest = 0
    for batch in batches:
        for column_lengths in lengths.values():
            longest = int(column_lengths[batch].max())
            real += int(column_lengths[batch].sum())
            padded += len(batch) * longest
            largest = max(largest, len(batch) * longest)
    return 1 - real / padded, largest


def test_token_budget_is_respected_and_padding_drops(nli):
    dataset, tokenizer, lengths = nli
    default = list(DefaultBatchSampler(RandomSampler(dataset, generator=torch.Generator().manual_seed(0)), 64, False))
    budget = TokenBudgetBatchSampler(dataset, batch_size=64, max_tokens=2048, tokenizer=tokenizer, seed=0)
    batches = list(budget)
    default_padding, default_largest = _padding(default, lengths)
    padding, largest = _padding(batches, lengths)
    assert largest <= 2048 < default_largest
    assert padding < 0.7 * default_padding, (padding, default_padding)
    assert len(batches) == len(budget)
    rows = list(itertools.chain(*batches))
    assert len(rows) == len(set(rows)) and len(rows) > 0.97 * len(dataset)
    assert max(map(len, batches)) == 64 and min(map(len, batches)) < 64  # short rows fill batches, long ones do not
    # the same sampler measured with the byte estimate also groups by length (no tokenizer needed)
    estimated = list(TokenBudgetBatchSampler(dataset, batch_size=64, max_tokens=2048))
    assert _padding(estimated, lengths)[0] < 0.7 * default_padding


def test_token_budget_counts_prompts_and_caps_at_max_length(nli):
    dataset, tokenizer, _ = nli
    dataset = dataset.select(range(1000))
    plain = TokenBudgetBatchSampler(dataset, batch_size=64, tokenizer=tokenizer)
    prompted = TokenBudgetBatchSampler(dataset, batch_size=64, tokenizer=tokenizer, prompts={"anchor": "a b c d e: "})
    prompt_tokens = len(tokenizer("a b c d e: ", add_special_tokens=False)["input_ids"])
    anchor = np.array([len(ids) for ids in tokenizer(list(dataset["anchor"]))["input_ids"]])
    assert np.array_equal(prompted.lengths, np.maximum(plain.lengths, anchor + prompt_tokens))
    capped = TokenBudgetBatchSampler(dataset, batch_size=64, tokenizer=tokenizer, max_length=16)
    assert capped.lengths.max() == 16 and np.array_equal(capped.lengths, np.minimum(plain.lengths, 16))


def test_token_budget_epochs_change_batches_but_not_their_count(nli):
    dataset, _, lengths = nli
    budget = TokenBudgetBatchSampler(dataset, batch_size=32, max_tokens=1024, lengths=lengths["anchor"], seed=1)
    epoch0 = list(budget)
    budget.set_epoch(1)
    epoch1 = list(budget)
    assert len(epoch0) == len(epoch1) == len(budget)
    assert sorted(map(len, epoch0)) == sorted(map(len, epoch1))
    assert {tuple(sorted(batch)) for batch in epoch0} != {tuple(sorted(batch)) for batch in epoch1}
    again = TokenBudgetBatchSampler(dataset, batch_size=32, max_tokens=1024, lengths=lengths["anchor"], seed=1)
    again.set_epoch(1)
    assert list(again) == epoch1


def test_token_budget_groups_equal_sizes_per_world_size(nli):
    dataset, _, lengths = nli
    budget = TokenBudgetBatchSampler(dataset, batch_size=32, max_tokens=1024, lengths=lengths["anchor"], world_size=2)
    batches = list(budget)
    assert len(batches) == len(budget) and len(batches) % 2 == 0
    assert len({len(b) for b in batches}) > 1
    for first, second in zip(batches[::2], batches[1::2], strict=True):
        assert len(first) == len(second)
    ranks = [list(BatchSamplerShard(budget, 2, rank, even_batches=False)) for rank in range(2)]
    assert [len(b) for b in ranks[0]] == [len(b) for b in ranks[1]] == [len(b) for b in batches[::2]]


def test_no_duplicate_texts_in_a_batch(nli):
    dataset, _, lengths = nli  # premises repeat: every entailment x contradiction pair of a premise is a row
    texts = [list(dataset[column]) for column in dataset.column_names]

    def conflicts(batches) -> int:
        count = 0
        for batch in batches:
            seen: set[str] = set()
            for row in batch:
                values = {column[row] for column in texts}
                count += bool(seen & values)
                seen |= values
        return count

    kwargs = {"batch_size": 64, "max_tokens": 3000, "lengths": lengths["anchor"]}
    assert conflicts(TokenBudgetBatchSampler(dataset, **kwargs)) > 0  # the check can fail on this data
    distinct = TokenBudgetBatchSampler(dataset, no_duplicates=True, **kwargs)
    batches = list(distinct)
    assert conflicts(batches) == 0
    assert len(batches) == len(distinct)
    assert sum(map(len, batches)) == sum(map(len, TokenBudgetBatchSampler(dataset, **kwargs)))
    # with world_size 2 no text repeats across the two ranks' batches of a step either
    pairs = TokenBudgetBatchSampler(dataset, no_duplicates=True, world_size=2, **kwargs)
    grouped = list(pairs)
    assert conflicts([a + b for a, b in zip(grouped[::2], grouped[1::2], strict=True)]) == 0
