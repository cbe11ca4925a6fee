"""Exact resume: a run killed with SIGKILL and rerun equals the uninterrupted run, bit for bit.

Each case runs the same command twice: once uninterrupted, once killed (every process of the run,
like a node dying) as soon as a given checkpoint is committed, then rerun unchanged. Losses per
step, the samples of every step (train.record_samples) and the final weights must be identical:
model, optimizer, schedule, RNG (dropout 0.1) and data position all resume exactly, and the
step logs keep one line per step.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from .conftest import (
    MULTI,
    SINGLE,
    TINY,
    assert_same_run,
    checkpoint_steps,
    kill_run,
    losses,
    reference,
    rows,
    run_train,
    start_train,
    wait_for,
)

pytestmark = pytest.mark.slow


def kill_then_rerun(
    run_dir: Path, args: list[str], kill_at: int, processes: int = 1, engine: str = "ddp"
) -> str:
    """Run; once checkpoints/step-<kill_at> is committed and a later step was logged, SIGKILL every
    process of the run; rerun the same command; return its stdout."""
    p = start_train(run_dir, *args, processes=processes, engine=engine)
    wait_for(run_dir / "checkpoints" / f"step-{kill_at}" / "manifest.json", p)
    while max(losses(run_dir), default=0) <= kill_at and p.poll() is None:
        time.sleep(0.02)  # let it log past the checkpoint: the rerun must not log those steps twice
    kill_run(p, run_dir)
    assert not (run_dir / "final").exists(), "the run finished before it could be killed"
    logged = max(losses(run_dir))
    r = run_train(run_dir, *args, processes=processes, engine=engine)
    assert r.returncode == 0, r.stderr[-3000:]
    resumed = re.search(rf"resumed from {run_dir}/checkpoints/step-(\d+) ", r.stdout)
    assert resumed and int(resumed.group(1)) < logged, (logged, r.stdout[-2000:])
    assert not list((run_dir / "checkpoints").glob(".tmp-*")), (
        "a half-written checkpoint was left behind"
    )
    return r.stdout


def test_single_process_padding_mid_epoch(single_reference, tmp_path):
    per_epoch = rows(single_reference)[0]["steps_per_epoch"]
    assert 4 < per_epoch < 10, "step 4 must be mid-epoch and the run must cross an epoch boundary"
    kill_then_rerun(tmp_path / "run", SINGLE, kill_at=4)
    assert_same_run(single_reference, tmp_path / "run")


def test_single_process_packing_at_epoch_boundary(tmp_path_factory, tmp_path):
    base = [*TINY, "collator=packing", "model.dropout=0.1", "train.epochs=2"]
    ref = reference(tmp_path_factory, "packing-ref", base)
    per_epoch = rows(ref)[0]["steps_per_epoch"]
    assert per_epoch >= 2 and len(losses(ref)) == 2 * per_epoch
    args = [
        *base,
        f"train.save_every={per_epoch}",
    ]  # the checkpoint falls exactly on the epoch boundary
    kill_then_rerun(tmp_path / "run", args, kill_at=per_epoch)
    assert_same_run(ref, tmp_path / "run")


@pytest.mark.parametrize(
    "damage",
    [
        "truncated_file",
        "missing_manifest",
        "garbled_header",  # safetensors header bytes changed, size kept
        "flipped_tensor_bytes",  # weights changed, size kept: would resume "fine" and diverge
        "garbled_trainer_state",
    ],
)
def test_damaged_latest_checkpoint_falls_back_to_the_previous_valid_one(
    single_reference, tmp_path, damage
):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(single_reference, run)
    shutil.rmtree(run / "final")
    assert checkpoint_steps(run) == [8, 10]
    latest = run / "checkpoints" / "step-10"
    weights = latest / "model.safetensors"
    if damage == "truncated_file":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "missing_manifest":
        (latest / "manifest.json").unlink()
    else:  # same size, other bytes: only the sha256 sums can tell
        target = latest / (
            "trainer_state.json" if damage == "garbled_trainer_state" else weights.name
        )
        data = bytearray(target.read_bytes())
        at = {"garbled_header": 8, "flipped_tensor_bytes": len(data) - 64}.get(damage, 2)
        data[at : at + 16] = bytes(b ^ 0x5A for b in data[at : at + 16])
        target.write_bytes(bytes(data))
    (run / "checkpoints" / ".tmp-step-9").mkdir()  # a save the kill interrupted
    r = run_train(run, *SINGLE)
    assert r.returncode == 0 and f"resumed from {run}/checkpoints/step-8 " in r.stdout, r.stderr[
        -3000:
    ]
    assert f"skipping checkpoint {latest}: " in r.stdout  # one line naming it
    assert not (run / "checkpoints" / ".tmp-step-9").exists(), (
        "stale temporary not removed at start"
    )
    assert_same_run(single_reference, run)


@pytest.mark.distributed
def test_ddp_two_processes(ddp_reference, tmp_path):
    kill_then_rerun(tmp_path / "run", MULTI, kill_at=3, processes=2)
    assert_same_run(ddp_reference, tmp_path / "run", ranks=2)


@pytest.mark.distributed
def test_zero3_two_processes(tmp_path_factory, tmp_path):
    ref = reference(tmp_path_factory, "zero3-ref", MULTI, processes=2, engine="zero3")
    kill_then_rerun(tmp_path / "run", MULTI, kill_at=3, processes=2, engine="zero3")
    assert_same_run(ref, tmp_path / "run", ranks=2)


@pytest.mark.distributed
def test_resume_with_another_world_size_is_refused(ddp_reference, tmp_path):
    import shutil

    shutil.copytree(ddp_reference, tmp_path / "run")
    assert checkpoint_steps(tmp_path / "run")
    r = run_train(tmp_path / "run", *MULTI[:-2], "train.max_steps=8")
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode == 2 and len(errors) == 1 and "Traceback" not in r.stderr
    assert "world_size=2" in errors[0] and "world_size=1" in errors[0]


def test_resume_with_another_batch_is_refused(single_reference, tmp_path):
    import shutil

    shutil.copytree(single_reference, tmp_path / "run")
    r = run_train(tmp_path / "run", *SINGLE, "train.micro_batch_size=3")
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode == 2 and len(errors) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "micro_batch_size=2" in errors[0] and "micro_batch_size=3" in errors[0]
