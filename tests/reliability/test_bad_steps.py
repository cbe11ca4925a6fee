"""Non-finite loss: every rank agrees to skip the update, the step is logged loudly, and too many
in a row abort the run (exit 3) naming step, rank and samples, with the last good checkpoint intact.

NaN is injected through the tests' fault hooks, SFT_TEST_FAULT="nan@<steps>[:<rank>]" (faults.py).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from sft import checkpoint as ckpt
from sft.trainer import EXIT_BAD_STEPS

from .conftest import TINY, checkpoint_steps, final_weights, rows, run_train, samples

pytestmark = pytest.mark.slow
BASE = [*TINY, "optim.schedule=constant", "train.save_every=2", "train.keep_last=0"]


def model_of(run_dir, step: int) -> dict:
    return load_file(str(run_dir / "checkpoints" / f"step-{step}" / "model.safetensors"))


def test_non_finite_steps_are_skipped_and_logged(tmp_path):
    run = tmp_path / "run"
    r = run_train(
        run, *BASE, "train.max_steps=5", "train.max_bad_steps=3", env={"SFT_TEST_FAULT": "nan@3,4"}
    )
    assert r.returncode == 0, r.stderr[-3000:]
    by_step = {row["step"]: row for row in rows(run) if "loss" in row}
    assert sorted(by_step) == [1, 2, 3, 4, 5]  # logged, never filtered out
    for s in (3, 4):
        assert by_step[s].get("skipped") is True and by_step[s]["loss"] == "nan"
    assert all(math.isfinite(by_step[s]["loss"]) and "skipped" not in by_step[s] for s in (1, 2, 5))
    assert json.loads((run / "summary.json").read_text())["skipped_steps"] == 2
    # the skipped updates left the weights untouched; step 5 trained again
    w2, w4, w5 = model_of(run, 2), model_of(run, 4), model_of(run, 5)
    assert all(torch.equal(w2[k], w4[k]) for k in w2)
    assert any(not torch.equal(w4[k], w5[k]) for k in w4)
    # step counter, schedule position and data position advanced through the skipped steps
    assert [s["step"] for s in samples(run)] == [1, 2, 3, 4, 5]
    assert (
        json.loads((run / "checkpoints" / "step-4" / ckpt.STATE).read_text())["scheduler"][
            "last_epoch"
        ]
        == 4
    )
    assert "non-finite loss=nan" in r.stdout + r.stderr


def test_too_many_in_a_row_abort_with_exit_3_naming_step_rank_and_samples(tmp_path):
    run = tmp_path / "run"
    r = run_train(
        run, *BASE, "train.max_steps=8", "train.max_bad_steps=2", env={"SFT_TEST_FAULT": "nan@3,4"}
    )
    assert r.returncode == EXIT_BAD_STEPS, r.stderr[-3000:]
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in r.stderr
    assert "aborting at step 4" in errors[0] and "rank(s) [0]" in errors[0] and "demo[" in errors[0]
    assert f"{run}/checkpoints/step-2" in errors[0]
    assert checkpoint_steps(run) == [2] and ckpt.is_valid(run / "checkpoints" / "step-2")
    assert all(torch.isfinite(t).all() for t in model_of(run, 2).values())
    assert json.loads((run / "summary.json").read_text())["exit_code"] == EXIT_BAD_STEPS
    assert not (run / "final").exists()


@pytest.mark.distributed
@pytest.mark.parametrize(
    "engine", ["ddp", "zero3"]
)  # DeepSpeed steps inside backward and skips by itself
def test_nan_on_one_rank_is_agreed_by_all_ranks(tmp_path, engine):
    run = tmp_path / "run"
    r = run_train(
        run,
        *TINY,
        "train.max_steps=3",
        processes=2,
        engine=engine,
        env={"SFT_TEST_FAULT": "nan@2:1"},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    by_step = {row["step"]: row for row in rows(run) if "loss" in row}
    assert by_step[2].get("skipped") is True and "skipped" not in by_step[3]
    assert "(ranks [1])" in r.stdout + r.stderr
    # had rank 0 applied its (all-reduced, NaN) gradient, every weight would be NaN now
    assert all(torch.isfinite(t).all() for t in final_weights(run).values())
