from __future__ import annotations

import math
from pathlib import Path

import pytest

from sft.report.figures import ema
from sft.report.runs import column_label, load_run

from .conftest import write_run


@pytest.mark.parametrize(
    ("collator", "strategy", "label"),
    [
        ("padding", None, "padding"),
        ("packing", "random_concat", "random packing"),
        ("packing", "bfd", "greedy packing"),
        ("packing", "ffd", "greedy packing"),
        ("packing", "next_fit", "my-run"),
        ("padding_free", None, "my-run"),
        (None, None, "my-run"),
    ],
)
def test_column_label(collator: str | None, strategy: str | None, label: str) -> None:
    assert column_label(collator, strategy, "my-run") == label


def test_config_name_key_and_summary_fallback(tmp_path: Path) -> None:
    run = write_run(tmp_path, "lima-random")
    text = (run / "config.yaml").read_text().replace("_name: packing", "name: packing")
    (run / "config.yaml").write_text(text)
    loaded = load_run(run)
    assert (loaded.collator, loaded.strategy, loaded.column) == (
        "packing",
        "random_concat",
        "random packing",
    )
    (run / "config.yaml").unlink()
    assert load_run(run).column == "random packing"  # from summary.json


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
