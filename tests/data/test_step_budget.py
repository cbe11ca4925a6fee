"""train.batch_by=samples|tokens and optim.lr_scaling: steps of a sample/token budget, same tokens."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from sft.config import OptimConfig, TrainConfig
from sft.data.step_budget import regroup, step_counts
from sft.epochs import Epochs
from sft.errors import UserError
from sft.schedule import scaled_lr
from tests.data.test_plan import _data
from tests.planning import batching, plan_epoch, targets_of
from tests.test_train import SMALL, run


def _mbs(plan):
    """Every micro-batch of every rank, in (rank, order) sequence."""
    world = len(plan.steps[0])
    return [[mb for st in plan.steps for mb in st[r]] for r in range(world)]


@pytest.mark.parametrize("kind", ["padding", "packing"])
@pytest.mark.parametrize("world", [1, 2])
@pytest.mark.parametrize("by,budget", [("samples", 16), ("samples", 7), ("tokens", 3000)])
def test_regroup_keeps_every_micro_batch_and_hits_the_budget(kind, world, by, budget):
    pieces, mask = _data(n=301)
    base = plan_epoch(
        pieces, mask, kind=kind, micro_batch_size=2, grad_accum=1, world_size=world, seed=0,
        epoch=0, capacity=512,
    )  # fmt: skip
    plan = regroup(base, by, budget)
    assert _mbs(plan) == _mbs(base)  # same micro-batches, same ranks, same order
    assert plan.tokens == base.tokens and plan.dropped_tail == base.dropped_tail
    for st in plan.steps:
        assert len({len(rank) for rank in st}) == 1  # equal micro-batch counts per rank
    rounds = step_counts(base, by)
    counts = step_counts(plan, by)
    assert sum(counts) == sum(rounds)
    biggest = max(rounds)
    for st, c in zip(plan.steps[:-1], counts[:-1]):  # the epoch's last step may be short
        one_round = len(st[0]) == 1  # a round alone may exceed the budget
        assert one_round or abs(c - budget) <= biggest / 2
    if budget >= biggest:
        assert abs(np.mean(counts[:-1]) - budget) <= biggest / 2


def test_packed_run_with_a_sample_budget_makes_as_many_updates_as_padding():
    pieces, mask = _data(n=400, max_len=200)
    targets = targets_of(mask, pieces)
    kw = {"world_size": 1, "seed": 0, "epochs": 1.0, "max_steps": -1}
    padded = Epochs(batching("padding"), pieces, targets, micro_batch_size=8, grad_accum=1, **kw)
    packed = Epochs(batching("packing", capacity=1024), pieces, targets, micro_batch_size=2,
                    grad_accum=1, **kw)  # fmt: skip
    # rows of ~3 samples, so rounds are finer than the budget (a round never splits)
    budget = Epochs(batching("packing", capacity=256), pieces, targets, micro_batch_size=1,
                    grad_accum=1, batch_by="samples", step_budget=8, **kw)  # fmt: skip
    assert padded.total_steps == 50 and padded.samples_per_step() == 8
    assert packed.total_steps <= 15 and packed.samples_per_step() > 20  # fewer, bigger updates
    assert abs(budget.total_steps - padded.total_steps) <= 0.2 * padded.total_steps
    assert abs(budget.samples_per_step() - 8) < 2.5


def test_scaled_lr():
    assert scaled_lr(1e-4, "none", 32, 8) == 1e-4
    assert scaled_lr(1e-4, "linear", 32, 8) == pytest.approx(4e-4)
    assert scaled_lr(1e-4, "sqrt", 32, 8) == pytest.approx(2e-4)
    assert scaled_lr(1e-4, "sqrt", 2, 8) == pytest.approx(1e-4 * math.sqrt(0.25))


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"batch_by": "samples"}, "needs step_budget > 0"),
        ({"step_budget": 8}, "needs step_budget > 0"),
        ({"batch_by": "tokens", "step_budget": 4096, "grad_accum": 2}, "grad_accum=2 applies to"),
    ],
)
def test_config_refusals(kw, match):
    with pytest.raises(UserError, match=match):
        TrainConfig(**kw)
    with pytest.raises(UserError, match="lr_reference must be >= 0"):
        OptimConfig(lr_reference=-1)


def test_training_run_records_samples_per_step_and_the_scaled_lr(tmp_path):
    r = run(
        [*SMALL, "collator=packing",
         "train.micro_batch_size=1",
         "train.batch_by=samples", "train.step_budget=6", "optim.lr_scaling=sqrt",
         "optim.lr_reference=6", "optim.warmup_ratio=0", "optim.schedule=constant",
         "train.max_steps=5", f"run_dir={tmp_path}"]
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    per_step = summary["samples_per_step"]
    assert summary["batch_by"] == "samples" and 4 <= per_step <= 10
    assert summary["lr"] == pytest.approx(2e-5 * math.sqrt(per_step / 6), rel=1e-4)
    assert "optim.lr_scaling=sqrt" in r.stdout
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [x for x in lines if "loss" in x and "eval_loss" not in x]
    assert len(steps) == 5 and all(x["lr"] == pytest.approx(summary["lr"]) for x in steps)
