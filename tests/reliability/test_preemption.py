"""Pre-emption: SIGTERM/SIGUSR1 -> flag -> agreed at the step boundary -> checkpoint -> exit 75.

A second signal while the checkpoint is written changes nothing; the rerun resumes from that
checkpoint and ends exactly like the uninterrupted run; nothing of the run stays alive.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from sft import checkpoint as ckpt
from sft.stop import StopRequest
from sft.trainer import EXIT_PREEMPTED

from .conftest import (
    MULTI,
    SINGLE,
    assert_same_run,
    checkpoint_steps,
    losses,
    output,
    run_processes,
    run_train,
    start_train,
)


def wait_for_step(run_dir: Path, step: int, proc) -> None:
    end = time.time() + 240
    while not losses(run_dir) or max(losses(run_dir)) < step:
        assert proc.poll() is None, f"run ended (rc={proc.returncode}) before step {step}"
        assert time.time() < end, f"step {step} not reached"
        time.sleep(0.02)


def signal_repeatedly(pids: list[int], sig: int, times: int = 10, every: float = 0.1) -> None:
    """Keep signalling while the checkpoint is being written: the extra signals must be ignored."""
    for _ in range(times):
        time.sleep(every)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_handler_only_sets_a_flag_and_a_second_signal_is_ignored(sig, capsys):
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)}
    try:
        stop = StopRequest()
        assert stop() is False
        os.kill(os.getpid(), sig)
        time.sleep(0.05)
        ignored = [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)]
        os.kill(os.getpid(), signal.SIGTERM)  # would end this test process unless ignored
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.05)
    finally:
        for s, h in saved.items():
            signal.signal(s, h)
    assert stop() is True and stop.requested is True
    assert ignored == [signal.SIG_IGN, signal.SIG_IGN]
    assert capsys.readouterr().out.count("got signal") == 1


CTRL_C = """
import os, signal, sys, time
from sft.stop import StopRequest
stop = StopRequest()
os.kill(os.getpid(), signal.SIGINT)
time.sleep(0.05)
print("flag", stop.requested, stop.interrupted, flush=True)
os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl-C: out at once
time.sleep(5)
print("still running", flush=True)
"""


def test_ctrl_c_asks_for_a_checkpoint_and_a_second_one_exits_at_once():
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-c", CTRL_C], capture_output=True, text=True, timeout=60, check=False
    )
    assert r.returncode == 130, r.stderr
    assert "got Ctrl-C (again to exit at once); saving at the next step boundary" in r.stdout
    assert "flag True True" in r.stdout and "second Ctrl-C: exiting now" in r.stdout
    assert "still running" not in r.stdout and "Traceback" not in r.stderr


@pytest.mark.slow
def test_single_process_ctrl_c_saves_exits_130_and_resumes_exactly(single_reference, tmp_path):
    run = tmp_path / "run"
    p = start_train(run, *SINGLE)
    wait_for_step(run, 5, p)
    os.kill(p.pid, signal.SIGINT)
    assert p.wait(timeout=120) == 130, output(run)[1][-3000:]
    stopped = max(losses(run))
    assert f"interrupted: checkpoint step-{stopped} saved; exit 130" in output(run)[0]
    assert "Traceback" not in output(run)[1]
    r = run_train(run, *SINGLE)
    assert r.returncode == 0, r.stderr[-3000:]
    assert_same_run(single_reference, run)


@pytest.mark.slow
def test_single_process_sigterm_saves_exits_75_and_resumes_exactly(single_reference, tmp_path):
    run = tmp_path / "run"
    p = start_train(run, *SINGLE)
    wait_for_step(run, 5, p)  # between the periodic checkpoints (every 4 steps)
    os.kill(p.pid, signal.SIGTERM)
    signal_repeatedly([p.pid], signal.SIGTERM)
    assert p.wait(timeout=120) == EXIT_PREEMPTED, output(run)[1][-3000:]
    stopped = max(losses(run))
    assert 5 <= stopped < 10 and stopped in checkpoint_steps(run)
    assert ckpt.is_valid(run / "checkpoints" / f"step-{stopped}")
    assert json.loads((run / "summary.json").read_text())["exit_code"] == EXIT_PREEMPTED
    assert f"pre-empted: checkpoint step-{stopped} saved" in output(run)[0]
    r = run_train(run, *SINGLE)
    assert r.returncode == 0 and f"resumed from {run}/checkpoints/step-{stopped}" in r.stdout, (
        r.stderr[-3000:]
    )
    assert_same_run(single_reference, run)


@pytest.mark.slow
@pytest.mark.distributed
def test_sigterm_to_the_launcher_of_two_processes(ddp_reference, tmp_path):
    run = tmp_path / "run"
    p = start_train(run, *MULTI, processes=2)
    wait_for_step(run, 1, p)
    workers = [pid for pid in run_processes(run) if pid != p.pid]
    assert len(workers) == 2
    os.kill(
        p.pid, signal.SIGTERM
    )  # what SLURM/Kubernetes do; the launcher forwards it to the workers
    signal_repeatedly(workers, signal.SIGTERM)  # and more signals while they save
    rc = p.wait(timeout=120)
    assert run_processes(run) == [], "processes of the run outlived the launcher"
    out, err = output(run)
    stopped = max(losses(run))
    assert stopped < 6 and stopped in checkpoint_steps(run), (rc, err[-3000:])
    assert ckpt.is_valid(run / "checkpoints" / f"step-{stopped}")
    assert json.loads((run / "summary.json").read_text())["exit_code"] == EXIT_PREEMPTED
    assert f"pre-empted: checkpoint step-{stopped} saved; exit {EXIT_PREEMPTED}" in out
    # torch elastic turns a signal to the launcher into its own SignalException (exit 1): the
    # workers' 75 is in summary.json and on stdout (docs/reliability.md)
    assert rc != 0
    r = run_train(run, *MULTI, processes=2)
    assert r.returncode == 0 and f"resumed from {run}/checkpoints/step-{stopped}" in r.stdout, (
        r.stderr[-3000:]
    )
    assert_same_run(ddp_reference, run, ranks=2)


@pytest.mark.slow
@pytest.mark.distributed
def test_a_signal_to_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    run = tmp_path / "run"
    p = start_train(run, *MULTI, processes=2)
    wait_for_step(run, 1, p)
    rank1 = [
        pid
        for pid in run_processes(run)
        if b"RANK=1\0" in Path(f"/proc/{pid}/environ").read_bytes()
    ]
    assert len(rank1) == 1
    os.kill(
        rank1[0], signal.SIGTERM
    )  # rank 0 gets nothing: it learns it from the step's all-reduce
    p.wait(timeout=120)
    assert run_processes(run) == []
    stopped = max(losses(run))
    assert stopped < 6 and ckpt.is_valid(run / "checkpoints" / f"step-{stopped}"), output(run)[1][
        -3000:
    ]
    assert json.loads((run / "summary.json").read_text())["exit_code"] == EXIT_PREEMPTED
    err = output(run)[1]
    assert err.count("exitcode  : 75") == 2, err[-3000:]  # both ranks exited 75 (launcher summary)
