"""`Epochs`: the plans of a run's epochs, the run's length in steps, and where a step falls.

Plans are pure functions of the epoch (sft/data/plan.py), so they are rebuilt on demand: only
the first and the current epochs' plans are kept, and each epoch's step count is cached.

Invariant: `locate(s)` for s in [0, total_steps) gives (epoch, index) with
sum(steps_in(e) for e < epoch) + index == s.
"""

from __future__ import annotations

import math

import numpy as np

from sft.batching import Batching
from sft.data.plan import EpochPlan
from sft.data.step_budget import micro_batch_count, regroup


class Epochs:
    def __init__(
        self,
        batching: Batching,
        pieces: np.ndarray,
        targets: np.ndarray,
        *,
        micro_batch_size: int,
        grad_accum: int,
        world_size: int,
        seed: int,
        epochs: float,
        max_steps: int,
        groups: np.ndarray | None = None,
        batch_by: str = "rows",
        step_budget: int = 0,
    ) -> None:
        self.batching = batching
        self.pieces = pieces
        self.targets = targets
        # group id per piece (collator.group_by); passed to plan only when there are groups
        self.extra = {} if groups is None else {"groups": groups}
        # batch_by=samples|tokens: plan rounds of one micro-batch per rank, then regroup them
        self.batch_by, self.step_budget = batch_by, step_budget
        self.sizes = {
            "micro_batch_size": micro_batch_size,
            "grad_accum": grad_accum if batch_by == "rows" else 1,
            "world_size": world_size,
        }
        self.seed = seed
        self._plans: dict[int, EpochPlan] = {}
        self._steps: dict[int, int] = {}
        if max_steps > 0:
            self.total_steps = max_steps
        else:
            full, frac = int(epochs), epochs - int(epochs)
            self.total_steps = sum(self.steps_in(e) for e in range(full)) + math.ceil(
                frac * self.steps_in(full)
            )

    @classmethod
    def for_run(cls, batching: Batching, data, train, world_size: int, seed: int) -> Epochs:
        """The epochs of a run: its prepared data (sft/data/dataset.py) under `train.*` sizes."""
        return cls(
            batching,
            data.train,
            data.tokens.targets,
            micro_batch_size=train.micro_batch_size,
            grad_accum=train.grad_accum,
            world_size=world_size,
            seed=seed,
            epochs=train.epochs,
            max_steps=train.max_steps,
            groups=data.groups,
            batch_by=train.batch_by,
            step_budget=train.step_budget,
        )

    def plan(self, epoch: int) -> EpochPlan:
        if epoch not in self._plans:
            self._plans = {k: v for k, v in self._plans.items() if k == 0 or k >= epoch - 1}
            plan = self.batching.plan(
                self.pieces, self.targets, seed=self.seed, epoch=epoch, **self.sizes, **self.extra
            )
            self._plans[epoch] = regroup(plan, self.batch_by, self.step_budget)
        return self._plans[epoch]

    def steps_in(self, epoch: int) -> int:
        """Optimizer steps of an epoch."""
        if epoch not in self._steps:
            self._steps[epoch] = len(self.plan(epoch))
        return self._steps[epoch]

    def samples_per_step(self, epoch: int = 0) -> float:
        """Mean samples per optimizer step of an epoch (as the trainer counts them)."""
        steps = self.plan(epoch).steps
        n = sum(micro_batch_count(mb, "samples") for st in steps for rank in st for mb in rank)
        return n / max(len(steps), 1)

    def locate(self, step: int) -> tuple[int, int]:
        """(epoch, index in that epoch) of the 0-based optimizer step `step`."""
        epoch = 0
        while step >= self.steps_in(epoch):
            step -= self.steps_in(epoch)
            epoch += 1
        return epoch, step
