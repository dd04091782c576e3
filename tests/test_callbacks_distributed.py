"""2-process gloo run (torchrun, the ``two_process_runs`` fixture): tokens and samples are summed over ranks, the log
is written once."""

from __future__ import annotations

import json

import pytest

from st_contrast.callbacks import read_jsonl


@pytest.mark.slow
def test_counts_are_summed_over_ranks_and_logged_by_rank_zero(two_process_runs):
    tmp_path = two_process_runs["distributed_monitoring_worker"]
    seen = [batch for rank in (0, 1) for batch in json.loads((tmp_path / f"rank{rank}.json").read_text())]
    assert {batch["step"] for batch in seen} == {1, 2, 3, 4}
    log = read_jsonl(tmp_path / "log.jsonl")
    assert [record["step"] for record in log] == [2, 4]  # one line per logging step: rank 1 writes nothing
    for record in log:
        upto = [batch for batch in seen if batch["step"] <= record["step"]]
        assert record["tokens_seen"] == sum(batch["tokens"] for batch in upto)
        assert record["samples_seen"] == sum(batch["rows"] for batch in upto) == 2 * 3 * record["step"]
        for name in ("alpha", "beta"):
            assert record[f"tokens_seen/{name}"] == sum(b["tokens"] for b in upto if b["dataset"] == name)
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert info["world_size"] == 2
