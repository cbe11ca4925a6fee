"""`train.batch_by=samples|tokens`: optimizer steps that hold about `train.step_budget` samples
or real tokens, whatever the rows hold, so a packed run can make as many updates as a padded one.

The batching choice plans the epoch with one micro-batch per rank and step (a "round": one
micro-batch on every rank, dealt as sft/data/plan.py deals them); `regroup` then joins
consecutive rounds into steps: a round joins the current step while that brings the step's count
closer to the budget (a step always holds at least one round), so step counts stay within half
a round of the budget, except the epoch's last step. Samples are counted as the trainer logs them
(distinct pieces per micro-batch); tokens are real (non-pad) tokens.

    padded run:  micro_batch_size=8                          -> 8 samples per step
    packed run:  micro_batch_size=1 batch_by=samples step_budget=8
                 -> steps of ~8 samples, as many rounds of packs as that takes

Invariant: the regrouped plan holds the same micro-batches on the same ranks in the same order as
the plan it came from (so every token of the epoch is still trained exactly once), and every rank
has the same number of micro-batches in every step.
"""

from __future__ import annotations

from dataclasses import replace

from sft.data.plan import EpochPlan, MicroBatch, row_tokens


def micro_batch_count(mb: MicroBatch, by: str) -> int:
    """What `batch_by` counts in one micro-batch: distinct pieces, or real tokens."""
    if by == "samples":
        return len({p for row in mb for _, _, p in row})
    return sum(row_tokens(row) for row in mb)


def regroup(plan: EpochPlan, by: str, budget: int) -> EpochPlan:
    """Join the rounds of `plan` (one step each) into steps of about `budget` (see above)."""
    if by == "rows":
        return plan
    steps, current, count = [], None, 0
    for rnd in plan.steps:
        c = sum(micro_batch_count(mb, by) for rank in rnd for mb in rank)
        if current is not None and abs(count + c - budget) > abs(count - budget):
            steps.append(current)
            current = None
        if current is None:
            current, count = [list(rank) for rank in rnd], c
        else:
            for r, rank in enumerate(rnd):
                current[r] += rank
            count += c
    if current is not None:
        steps.append(current)
    return replace(plan, steps=steps)


def step_counts(plan: EpochPlan, by: str) -> list[int]:
    """Samples (or tokens) of every step of the plan."""
    return [sum(micro_batch_count(mb, by) for rank in st for mb in rank) for st in plan.steps]
