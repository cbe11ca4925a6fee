from __future__ import annotations

import math
from pathlib import Path

import pytest

from sft.report.figures import ema
from sft.report.runs import column_label, load_run

from .conftest import write_run


@pytest.mark.parametrize(
    ("collator", "label"),
    [
        ({"name": "padding"}, "padding"),
        ({"name": "packing", "strategy": "random_concat"}, "random packing"),
        ({"name": "packing", "strategy": "bfd"}, "greedy packing"),
        ({"name": "packing", "strategy": "ffd"}, "greedy packing"),
        ({"name": "packing", "strategy": "next_fit"}, "packing next_fit"),
        ({"name": "padding_free"}, "padding_free"),
        ({"_name": "packing", "isolate": True}, "greedy packing"),  # a config of an older version
        ({}, "my-run"),
    ],
)
def test_column_label_from_the_config(collator: dict, label: str) -> None:
    assert column_label({}, collator, "my-run") == label


def test_column_label_prefers_the_summary(tmp_path: Path) -> None:
    summary = {"batching": {"label": "random packing"}}
    assert column_label(summary, {"name": "padding"}, "x") == "random packing"
    run = write_run(tmp_path, "lima-random")
    assert load_run(run).column == "random packing"
    (run / "summary.json").unlink()
    loaded = load_run(run)  # from config.yaml
    assert (loaded.collator, loaded.strategy, loaded.column) == (
        "packing",
        "random_concat",
        "random packing",
    )


def test_eval_lines_are_separated_from_training_lines(tmp_path: Path) -> None:
    loaded = load_run(write_run(tmp_path, "lima-padding"))
    assert len(loaded.train) == 120 and len(loaded.evals) == 3
    assert all("loss" not in r for r in loaded.evals)


def test_ema_decays_by_token_distance() -> None:
    assert ema([0, 1, 2], [3.0, 1.0, 2.0], 0) == [3.0, 1.0, 2.0]
    assert ema([0, 10, 20], [5.0, 5.0, 5.0], 7.0) == pytest.approx([5.0, 5.0, 5.0])
    # the same token distance gives the same weight, however many points lie in between
    coarse = ema([0, 100], [1.0, 0.0], 50.0)[-1]
    fine = ema([0, 50, 100], [1.0, 0.0, 0.0], 50.0)[-1]
    assert coarse == pytest.approx(math.exp(-2)) and fine == pytest.approx(math.exp(-2))
