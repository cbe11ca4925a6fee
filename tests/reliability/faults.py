"""Fault injection for the reliability tests, through the trainer's `StepHooks`.

    SFT_TEST_FAULT="nan@3,4;oom@2;stall@5:1"      kind@steps[:rank]

nan poisons the micro-batch's loss, oom raises torch.OutOfMemoryError before the forward, stall
hangs the rank after backward until a stop is requested (the launcher's SIGTERM). Runs started
with a fault use tests/reliability/fault_train.py, which is `sft/train.py` with these hooks.
"""

from __future__ import annotations

import os
import time

import torch

from sft.hooks import StepHooks


class FaultHooks(StepHooks):
    def __init__(self, spec: str) -> None:
        self.faults: dict[tuple[int, int | None], str] = {}
        for item in filter(None, spec.split(";")):
            kind, _, where = item.partition("@")
            steps, _, rank = where.partition(":")
            for s in steps.split(","):
                self.faults[(int(s), int(rank) if rank else None)] = kind

    @classmethod
    def from_env(cls) -> FaultHooks:
        return cls(os.environ.get("SFT_TEST_FAULT", ""))

    def _fault(self, step: int, rank: int) -> str | None:
        return self.faults.get((step, rank), self.faults.get((step, None)))

    def micro_batch(self, step: int, rank: int) -> None:
        if self._fault(step, rank) == "oom":
            raise torch.OutOfMemoryError("out of memory (injected by SFT_TEST_FAULT)")

    def loss(self, step: int, rank: int, loss: torch.Tensor) -> torch.Tensor:
        return loss * float("nan") if self._fault(step, rank) == "nan" else loss

    def after_backward(self, step: int, rank: int, stop_requested) -> None:
        while self._fault(step, rank) == "stall" and not stop_requested():
            time.sleep(0.1)  # a hung rank: the launcher's SIGTERM (or a peer's timeout) ends it
