"""`RunLock`: one run at a time per run directory (an advisory lock held for the whole run).

    run_dir/.lock    fcntl.flock(LOCK_EX | LOCK_NB) by rank 0; holds the owner's PID and host

The kernel releases a flock when its process ends, however it ends (exit, crash, kill -9), so a
stale lock file left by a dead run never blocks a rerun: only a live holder does.

Invariant: while a RunLock on run_dir is held, acquiring another one on the same run_dir fails
with a UserError naming the holder; nothing in run_dir has been written by the second run.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from sft.errors import UserError

LOCK_NAME = ".lock"


class RunLock:
    def __init__(self, run_dir: Path) -> None:
        self._fd = -1
        self.path = run_dir / LOCK_NAME
        run_dir.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(self._fd, 200).decode(errors="replace").strip() or "another process"
            os.close(self._fd)
            self._fd = -1
            raise UserError(
                f"run_dir {run_dir} is in use by a run still going ({holder}); wait for it to "
                "end, or give this run another run_dir"
            ) from None
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())

    def release(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:  # a Recipe that failed half-way still lets go of its run_dir
        self.release()
