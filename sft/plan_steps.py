"""`sft-plan`'s optimizer steps per epoch and training FLOPs, from the trainer's own epoch plan.

`epoch_estimate` plans epoch 0 over the dataset's real token lengths exactly as the trainer does
(sft/epochs.py: the batching choice's plan, regrouped to `train.step_budget` under
`train.batch_by=samples|tokens`), and counts rows, steps, real and computed tokens
(rows padded to the longest row of their micro-batch) and the squared attention spans (per
sample when samples are isolated). `train_flops` turns tokens into forward + backward FLOPs.

Invariant: pure arithmetic over the plan and a `ModelShape` (sft/plan_memory.py); tests check
both against hand-computed values (tests/distributed/test_plan_memory.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sft.plan_memory import ModelShape


# ----------------------------------------------------------------------------------- steps
@dataclass(frozen=True)
class EpochEstimate:
    """One collator/strategy over the real lengths: how many steps and how many computed tokens."""

    label: str
    rows: int
    steps: int
    real_tokens: int
    computed_tokens: int  # rows padded to the longest row of their micro-batch
    attention_sq: float  # sum of squared attention spans (per sample when isolated)
    dropped: int

    @property
    def efficiency(self) -> float:
        return self.real_tokens / max(self.computed_tokens, 1)


def epoch_estimate(
    pieces: np.ndarray,
    targets: np.ndarray,
    batching,
    *,
    micro_batch_size: int,
    grad_accum: int,
    gpus: int,
    seed: int = 0,
    batch_by: str = "rows",
    step_budget: int = 0,
) -> EpochEstimate:
    """Steps and tokens of epoch 0 as the trainer plans it (sft/epochs.py, with `train.batch_by`)."""
    from sft.epochs import Epochs

    plan = Epochs(
        batching,
        pieces,
        targets,
        micro_batch_size=micro_batch_size,
        grad_accum=grad_accum,
        world_size=gpus,
        seed=seed,
        epochs=1,
        max_steps=0,
        batch_by=batch_by,
        step_budget=step_budget,
    ).plan(0)
    rows = computed = real = 0
    sq = 0.0
    for step in plan.steps:
        for rank in step:
            for mb in rank:
                lens = [sum(b - a for a, b, _ in row) for row in mb]
                rows += len(mb)
                real += sum(lens)
                computed += len(mb) * max(lens, default=0)
                sq += sum(float(b - a) ** 2 for row in mb for a, b, _ in row)
    b = batching.describe()
    label = b["collator"] + (f" {b['strategy']}" if b["strategy"] else "")
    return EpochEstimate(
        label, rows, len(plan), real, computed, sq, plan.dropped_tail + plan.dropped_fragments
    )


def train_flops(
    shape: ModelShape, computed_tokens: float, supervised_tokens: float, attention_sq: float
) -> float:
    """Forward + backward FLOPs: 6 x weights x tokens (LM head at supervised positions only) + attention."""
    body = shape.num_params() - shape.embedding_params() - shape.lm_head_params()
    head = shape.vocab_size * shape.hidden_size
    return (
        6 * body * computed_tokens
        + 6 * head * supervised_tokens
        + 6 * shape.num_layers * shape.q_dim * attention_sq
    )
