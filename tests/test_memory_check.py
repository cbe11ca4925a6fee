"""The start-up memory check refuses, in one line with overrides that fit, a run that cannot fit.

- `check_memory`: fits -> the estimate; too big (after the margin, train.memory_margin) ->
  UserError naming the estimate, the margin, the free memory and the first fitting overrides (fewest changes: the loss impl, then checkpointing, then a
  smaller micro-batch with grad_accum raised to keep the batch); unknown free memory -> no check.
- A real `sft-train` whose estimate is far above this machine's RAM stops at start-up with exit 2
  and that line, before writing anything; `train.memory_check=false` turns the check off.
- `sft-plan --fit BUDGET` lists what fits.

How close the estimate is to measured runs is a benchmark (benchmarks/bench_memory.py), not a
test here: RSS moves by hundreds of MiB between environments.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sft.errors import UserError
from sft.memory_check import check_memory, fitting_options
from sft.plan_cli import setup_from_config
from sft.plan_memory import GIB, resolve_shape, state_memory
from sft.plan_tables import parse_budget

ROOT = Path(__file__).resolve().parents[1]
SHAPE = resolve_shape("SmolLM2-135M")
SETUP = setup_from_config("single", 0, "fp32", 1, None)


def _kw(**over):
    kw = {
        "rows_of": lambda mbs: (mbs, 1280),
        "micro_batch_size": 8,
        "grad_accum": 1,
        "checkpointing": False,
        "loss_impl": "full",
        "chunk_tokens": 512,
        "supervised_fraction": 0.5,
    }
    return kw | over


def test_a_run_that_fits_passes_and_returns_its_estimate():
    est = check_memory(SHAPE, SETUP, free_bytes=200 * GIB, **_kw())
    assert 10 * GIB < est < 20 * GIB  # SmolLM2, 8 x 1280 tokens, fp32, no checkpointing


def test_the_margin_refuses_an_estimate_that_fits_only_without_it():
    resident = state_memory(SHAPE, SETUP).weights
    est = check_memory(SHAPE, SETUP, free_bytes=200 * GIB, **_kw())
    free = est * 1.10 - resident  # the estimate fits, estimate x 1.15 does not
    assert check_memory(SHAPE, SETUP, free_bytes=free, margin=0.0, **_kw()) == est
    with pytest.raises(UserError) as e:
        check_memory(SHAPE, SETUP, free_bytes=free, margin=0.15, **_kw())
    msg = str(e.value)
    assert "+ 15% margin (train.memory_margin)" in msg and "try " in msg
    _, fits = fitting_options(SHAPE, SETUP, budget=est * 1.10 / 1.15, **_kw())
    assert fits and fits[0].bytes * 1.15 <= est * 1.10  # the advice fits with its margin
    assert f"estimated {fits[0].bytes / GIB:.1f} GiB" in msg


def test_unknown_free_memory_skips_the_check():
    assert check_memory(SHAPE, SETUP, free_bytes=None, **_kw()) > 0


def test_a_run_that_cannot_fit_is_refused_with_the_override_that_fits():
    with pytest.raises(UserError) as e:
        check_memory(SHAPE, SETUP, free_bytes=6 * GIB, **_kw())
    msg = str(e.value)
    assert "\n" not in msg
    assert "GiB is free" in msg and "train.memory_check=false" in msg
    assert "try model.gradient_checkpointing=true" in msg  # keeps the micro-batch: fewest changes


def test_advice_shrinks_the_micro_batch_and_keeps_the_batch_when_checkpointing_is_not_enough():
    base, fits = fitting_options(SHAPE, SETUP, budget=2.6 * GIB, **_kw(checkpointing=True))
    assert fits and all(o.bytes <= 2.6 * GIB for o in fits)
    first = fits[0]
    assert first.micro_batch_size < 8 and first.micro_batch_size * first.grad_accum == 8
    assert f"train.micro_batch_size={first.micro_batch_size}" in first.overrides(base)


def test_nothing_fits_says_so():
    with pytest.raises(UserError, match="no micro-batch size, checkpointing or loss setting fits"):
        check_memory(SHAPE, SETUP, free_bytes=0.1 * GIB, **_kw())


def test_budget_parsing():
    assert parse_budget("24GiB") == 24 * GIB
    assert parse_budget("80GB") == 80e9
    assert parse_budget("40") == 40 * GIB
    with pytest.raises(UserError, match="--fit"):
        parse_budget("lots")


HUGE = [
    "model=tiny",
    "model.tiny_hidden_size=1024",
    "data=demo",
    "data.demo_size=600",
    "collator=padding",
    "train.micro_batch_size=600",
    "train.max_steps=1",
    "train.progress=false",
]


def test_sft_train_refuses_a_run_far_above_the_free_memory(tmp_path):
    run_dir = tmp_path / "run"
    r = subprocess.run(
        [sys.executable, str(ROOT / "sft" / "train.py"), *HUGE, f"run_dir={run_dir}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    assert r.returncode == 2, r.stderr[-2000:]
    lines = [x for x in r.stderr.splitlines() if "GiB is free" in x]
    assert len(lines) == 1 and "try " in lines[0], r.stderr[-2000:]
    assert not (run_dir / "config.yaml").exists()  # refused before anything is written


def test_the_check_can_be_turned_off():
    from sft.cli_config import compose_job
    from sft.memory_check import check_run_memory

    cfg, _ = compose_job([*HUGE, "train.memory_check=false", "run_dir=unused"])
    assert check_run_memory(cfg, None, None, None, "full") == 0.0


def test_sft_plan_fit_lists_what_fits():
    r = subprocess.run(
        [sys.executable, "-m", "sft.plan_cli", "model=smollm2_135m", "collator=packing",
         "--no-data", "--fit", "8GiB"],
        capture_output=True, text=True, cwd=ROOT, timeout=300, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Settings that fit 8.0 GiB per GPU" in r.stdout
    assert "model.gradient_checkpointing=true" in r.stdout
