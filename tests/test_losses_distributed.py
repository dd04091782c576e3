"""2-process gloo runs (torchrun, the ``two_process_runs`` fixture) of the InfoNCE losses against one process on the
concatenated batch."""

from __future__ import annotations

import json


def test_gathered_info_nce_equals_single_process_and_temperature_stays_synced(two_process_runs):
    report = json.loads((two_process_runs["distributed_losses_worker"] / "report.json").read_text())
    for name in ("InfoNCELoss", "CachedInfoNCELoss", "SigLIPLoss", "GlobalContrastiveLoss", "CLIPLoss", "SimCSELoss"):
        assert report[name]["loss"] < 1e-5, report
        assert report[name]["gradients"] < 1e-5, report
    assert report["GlobalContrastiveLoss"]["state"] < 1e-5, "the moving averages u differ from one process"
    assert report["GloFND"] < 1e-6, "GloFND state differs from the single-process one"
    assert report["trainer"]["temperature_moved"] > 1e-3, "the temperature did not train"
    assert report["trainer"]["rank_difference"] == 0.0, "weights or temperature differ across ranks"


def test_a_sample_updated_on_two_ranks_gets_one_agreed_value(two_process_runs):
    report = json.loads((two_process_runs["distributed_losses_worker"] / "report.json").read_text())["sync_rows"]
    assert report["values"] < 1e-6, "row 2 is not the mean of both ranks' updates on every rank"
    assert report["counts"] == [[0, 4, 9, 2, 0]] * 2
    assert report["seen"] == [[False, True, True, True, False]] * 2
