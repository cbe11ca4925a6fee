"""A hung collective fails at the process-group timeout (distributed.timeout_minutes), not never.

Rank 1 stalls at step 2 (the tests' fault hook SFT_TEST_FAULT="stall@2:1", faults.py, until a signal); rank 0 waits
in the step's all-reduce, times out after one minute and fails; the launcher then stops the
stalled rank. Without the timeout the run would hang (gloo's default is 30 minutes).
"""

from __future__ import annotations

import time

import pytest

from .conftest import TINY, run_processes, run_train

pytestmark = [pytest.mark.slow, pytest.mark.distributed]


def test_stalled_rank_fails_the_run_at_the_timeout(tmp_path):
    run = tmp_path / "run"
    t0 = time.time()
    r = run_train(
        run,
        *TINY,
        "train.max_steps=4",
        "distributed.timeout_minutes=1",
        processes=2,
        env={"SFT_TEST_FAULT": "stall@2:1"},
        timeout=240,
    )
    elapsed = time.time() - t0
    assert r.returncode != 0
    assert 60 <= elapsed < 180, f"ended after {elapsed:.0f}s"
    assert "rank      : 0" in r.stderr and "timed out" in r.stderr.lower(), r.stderr[-3000:]
    assert run_processes(run) == []
