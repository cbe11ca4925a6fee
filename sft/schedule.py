"""The learning-rate schedule: linear warmup, then cosine, linear or constant to a floor.

    factor(step) = (step + 1) / warmup                      step < warmup
                 = floor + (1 - floor) * f(progress)       after, progress in [0, 1]
    f = 0.5 * (1 + cos(pi * progress)) (cosine), 1 - progress (linear), 1 (constant, no floor)

Invariant: factor(warmup - 1) == 1 and, for cosine/linear, factor(total) == floor.
"""

from __future__ import annotations

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
