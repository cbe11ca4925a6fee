"""sft-report --by: runs grouped by config keys, mean and sample std over each group's runs."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys

import matplotlib.pyplot as plt
import pytest

from sft.report.build import build_report
from sft.report.groups import config_value, group_rows, mean_std, write_groups
from sft.report.runs import load_run
from tests.test_train import ROOT, SMALL


def _fake_run(root, name, strategy, seed, eval_loss):
    run = root / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(
        f"run_name: {name}\nseed: {seed}\ncollator:\n  name: packing\n  strategy: {strategy}\n"
    )
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 2.0}) + "\n")
    summary = {"run_name": name, "final_eval_loss": eval_loss, "steps": 10, "lr": 2e-5}
    summary["pack_efficiency"] = 0.9 + 0.01 * seed
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def _mkdir(path):
    path.mkdir()
    return path


def test_mean_and_sample_std():
    assert mean_std([]) == (None, None)
    assert mean_std([2.0]) == (2.0, None)  # one run: no spread
    mean, std = mean_std([1.0, 2.0, 4.0])
    assert mean == pytest.approx(7 / 3) and std == pytest.approx(statistics.stdev([1, 2, 4]))


def test_groups_by_config_keys(tmp_path):
    losses = {
        ("bfd", 0): 1.10,
        ("bfd", 1): 1.20,
        ("random_concat", 0): 1.30,
        ("random_concat", 1): 1.5,
    }
    runs = [
        load_run(_fake_run(tmp_path, f"{s}-{seed}", s, seed, v)) for (s, seed), v in losses.items()
    ]
    assert config_value(runs[0], "collator.strategy") == "bfd"
    assert config_value(runs[0], "optim.lr_scaling") == "-"
    names, rows = group_rows(runs, ["collator.strategy"])
    assert "eval loss" in names and "tokens/s" not in names  # only metrics some run has
    by = {r["keys"]["collator.strategy"]: r for r in rows}
    assert by["bfd"]["runs"] == ["bfd-0", "bfd-1"]
    assert by["bfd"]["eval loss"]["mean"] == pytest.approx(1.15)
    assert by["random_concat"]["eval loss"]["std"] == pytest.approx(math.sqrt(0.02))
    assert by["bfd"]["pack eff. %"]["mean"] == pytest.approx(90.5)  # in percent
    _, per_run = group_rows(runs, ["collator.strategy", "seed"])
    assert len(per_run) == 4 and all(r["eval loss"]["std"] is None for r in per_run)
    report = build_report([r.path for r in runs], tmp_path / "rep", by=["collator.strategy"])
    text = report.read_text()
    assert "## Groups (by collator.strategy)" in text
    assert "| bfd | 2 | 1.15 ± 0.071 |" in text
    assert (tmp_path / "rep" / "groups.png").stat().st_size > 5000
    csv_rows = (tmp_path / "rep" / "groups.csv").read_text().splitlines()
    assert csv_rows[0].startswith("collator.strategy,runs,eval loss mean,eval loss std")


def test_a_real_sweep_reported_by_collator(tmp_path):
    """Four real tiny runs (2 collators x 2 seeds, one sweep) grouped by collator over seeds."""
    sweep = tmp_path / "sweep"
    r = subprocess.run(
        [sys.executable, str(ROOT / "sft" / "train.py"), "-m", *SMALL, "train.max_steps=3",
         "data.val_fraction=0.05", "train.eval_every=3", "collator=padding,packing", "seed=0,1",
         f"hydra.sweep.dir={sweep}"],
        capture_output=True, text=True, cwd=ROOT, timeout=600, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    dirs = sorted(p for p in sweep.iterdir() if (p / "summary.json").is_file())
    assert len(dirs) == 4
    out = tmp_path / "rep"
    cli = [sys.executable, "-m", "sft.report.cli", *map(str, dirs), "--by", "collator.name"]
    r = subprocess.run(
        [*cli, "--out", str(out)], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert r.returncode == 0, r.stderr[-2000:]
    groups = json.loads((out / "groups.json").read_text())["groups"]
    assert sorted(g["keys"]["collator.name"] for g in groups) == ["packing", "padding"]
    for g in groups:
        losses = [json.loads((d / "summary.json").read_text())["final_eval_loss"] for d in dirs
                  if g["keys"]["collator.name"] in d.name]  # fmt: skip
        assert len(losses) == 2 and g["eval loss"]["n"] == 2
        assert g["eval loss"]["mean"] == pytest.approx(sum(losses) / 2)
        assert g["eval loss"]["std"] == pytest.approx(statistics.stdev(losses))


def test_eval_loss_by_value_gets_a_column_per_value(tmp_path):
    runs = []
    for seed, (a, b) in enumerate([(1.0, 2.0), (1.2, 2.4)]):
        path = _fake_run(tmp_path, f"mix-{seed}", "bfd", seed, (a + b) / 2)
        summary = json.loads((path / "summary.json").read_text())
        summary["final_eval_loss_by"] = {"aqua": a, "gsm8k": b}
        (path / "summary.json").write_text(json.dumps(summary))
        runs.append(load_run(path))
    names, rows = group_rows(runs, ["collator.strategy"])
    assert names[:3] == ["eval loss", "eval loss aqua", "eval loss gsm8k"]
    assert rows[0]["eval loss aqua"]["mean"] == pytest.approx(1.1)
    assert rows[0]["eval loss gsm8k"]["std"] == pytest.approx(statistics.stdev([2.0, 2.4]))
    plain = write_groups(runs, ["collator.strategy"], _mkdir(tmp_path / "plain"))[-1]
    for run in runs:  # the same runs without the per-value losses: no second panel
        run.summary.pop("final_eval_loss_by")
    single = write_groups(runs, ["collator.strategy"], _mkdir(tmp_path / "single"))[-1]
    wide, narrow = (plt.imread(str(p)).shape[1] for p in (plain, single))
    assert plain.name == single.name == "groups.png" and wide > 1.8 * narrow
    (runs[0].path / "config.yaml").write_text("collator:\n  group_by: ''\n")
    assert config_value(load_run(runs[0].path), "collator.group_by") == "''"
