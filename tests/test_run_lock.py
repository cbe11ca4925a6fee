"""RunLock: a second run on a run_dir in use is refused; a dead holder never blocks a rerun."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from sft.errors import UserError
from sft.run_lock import RunLock

HOLD = "import sys, time; from sft.run_lock import RunLock; lock = RunLock(__import__('pathlib').Path(sys.argv[1])); print('held', flush=True); time.sleep(60)"


def test_a_live_holder_blocks_and_its_death_releases(tmp_path):
    p = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert p.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=f"pid {p.pid} on"):
            RunLock(tmp_path)
    finally:
        p.kill()  # like kill -9: no cleanup runs
        p.wait()
    time.sleep(0.05)
    lock = RunLock(tmp_path)  # the stale .lock file is left behind, but no longer held
    lock.release()
    RunLock(tmp_path).release()  # released locks can be taken again
