"""`StopRequest`: SIGTERM or SIGUSR1 asks the run to checkpoint at the next step boundary.

The first signal sets the flag and prints one line; later ones are ignored by the OS (SIG_IGN),
also while the checkpoint is written and during interpreter shutdown. The trainer all-reduces
the flag with the step's loss, so every rank stops after the same step.
"""

from __future__ import annotations

import os
import signal

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class StopRequest:
    def __init__(self) -> None:
        self.requested = False
        self.rank = os.environ.get("RANK", "0")
        for sig in SIGNALS:
            signal.signal(sig, self._handle)

    def _handle(self, signum, _frame) -> None:
        print(
            f"[sft] rank {self.rank}: got signal {signum}; saving at the next step boundary",
            flush=True,
        )
        self.requested = True
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_IGN)

    def __call__(self) -> bool:
        return self.requested
