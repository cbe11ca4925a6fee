"""The learning-rate schedule: linear warmup, then cosine, linear or constant to a floor.

    factor(step) = (step + 1) / warmup                      step < warmup
                 = floor + (1 - floor) * f(progress)       after, progress in [0, 1]
    f = 0.5 * (1 + cos(pi * progress)) (cosine), 1 - progress (linear), 1 (constant, no floor)

Invariant: factor(warmup - 1) == 1 and, for cosine/linear, factor(total) == floor.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable


def warmup_then_decay(kind: str, warmup: int, total: int, floor: float) -> Callable[[int], float]:
    """The multiplier of the peak learning rate at each 0-based optimizer step."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        if kind == "constant":
            return 1.0
        prog = min(1.0, (step - warmup) / max(1, total - warmup))
        f = 0.5 * (1 + math.cos(math.pi * prog)) if kind == "cosine" else 1 - prog
        return floor + (1 - floor) * f

    return factor


def scaled_lr(lr: float, scaling: str, samples_per_step: float, reference: float) -> float:
    """`optim.lr_scaling`: lr x (samples_per_step / reference) ** {none: 0, linear: 1, sqrt: 1/2}."""
    power = {"none": 0.0, "linear": 1.0, "sqrt": 0.5}[str(scaling)]
    return lr * (samples_per_step / reference) ** power


def scaled_optim(o, t, per_step: float, world: int, total_steps: int, main: bool):
    """The optim config `o` with the lr of `optim.lr_scaling` for `per_step` samples per step
    (epoch 0's plan) against `optim.lr_reference` (0 = rows of a step under train config `t`);
    the main process prints the step size and the lr."""
    ref = o.lr_reference or t.micro_batch_size * t.grad_accum * world
    lr = scaled_lr(o.lr, o.lr_scaling, per_step, ref)
    if main and t.batch_by != "rows":
        print(
            f"[sft] train.batch_by={t.batch_by}: {per_step:.2f} samples per step on average, "
            f"{total_steps} steps (train.step_budget={t.step_budget}; a step is at least one "
            "micro-batch per rank)",
            flush=True,
        )
    if main and o.lr_scaling != "none":
        power = "1" if o.lr_scaling == "linear" else "1/2"
        print(
            f"[sft] lr {lr:.4g} = {o.lr:g} x ({per_step:.2f} samples/step / {ref:g}) ^ {power} "
            f"(optim.lr_scaling={o.lr_scaling})",
            flush=True,
        )
    return dataclasses.replace(o, lr=lr)
