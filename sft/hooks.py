"""`StepHooks`: the points of a training step where a test can inject a fault into a real run.

The trainer calls them at fixed places of `train_step`; the default does nothing. The
reliability tests pass their own (tests/reliability/faults.py) to prove the out-of-memory,
non-finite-loss and hung-rank paths without any test code in the loop.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class StepHooks:
    def micro_batch(self, step: int, rank: int) -> None:
        """Before the forward of every micro-batch of optimizer step `step` (1-based) on `rank`."""

    def loss(self, step: int, rank: int, loss: torch.Tensor) -> torch.Tensor:
        """The micro-batch's loss before backward; returns the loss to use."""
        return loss

    def after_backward(self, step: int, rank: int, stop_requested: Callable[[], bool]) -> None:
        """After the gradients of the step are clipped, before the ranks agree on the step."""
