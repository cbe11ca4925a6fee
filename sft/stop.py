"""`StopRequest`: SIGTERM, SIGUSR1 or Ctrl-C asks the run to checkpoint at the next step boundary.

    SIGTERM / SIGUSR1 (a scheduler's notice)  -> checkpoint, exit 75 (requeue and rerun to resume)
    SIGINT (Ctrl-C)                           -> checkpoint, exit 130; a second Ctrl-C exits at
                                                 once (exit 130, no checkpoint)

The first signal sets the flag and prints one line; later SIGTERM/SIGUSR1 are ignored by the OS
(SIG_IGN), also while the checkpoint is written and during interpreter shutdown; every rank
ignores them once its training loop has ended (`ignore_further`), so each rank exits with the
run's own code even when the launcher signals the ranks still shutting down. The trainer
all-reduces the flag with the step's loss, so every rank stops after the same step.
"""

from __future__ import annotations

import os
import signal
import sys

SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


class StopRequest:
    def __init__(self) -> None:
        self.requested = False
        self.interrupted = False  # the request came from Ctrl-C
        self.rank = os.environ.get("RANK", "0")
        for sig in SIGNALS:
            signal.signal(sig, self._handle)

    def _handle(self, signum, _frame) -> None:
        if signum == signal.SIGINT and self.requested:
            print(f"[sft] rank {self.rank}: second Ctrl-C: exiting now, no checkpoint", flush=True)
            sys.stdout.flush()
            os._exit(EXIT_INTERRUPTED)
        what = "Ctrl-C (again to exit at once)" if signum == signal.SIGINT else f"signal {signum}"
        print(f"[sft] rank {self.rank}: got {what}; saving at the next step boundary", flush=True)
        self.requested = True
        self.interrupted = self.interrupted or signum == signal.SIGINT
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, signal.SIG_IGN)

    def __call__(self) -> bool:
        return self.requested

    def ignore_further(self) -> None:
        """The run is over on this rank: a launcher's SIGTERM (sent to the other ranks once one
        exits non-zero) must not turn this rank's exit code into a kill during shutdown."""
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, signal.SIG_IGN)
