"""Test helpers: plan epochs through the real batching objects from a (kind, strategy) pair.

Many tests describe a plan as `kind="padding" | "padding_free" | "packing"` plus a strategy;
`plan_epoch` and `build_rows` here build the matching batching config (sft/batching/) and call
its own `plan` / `rows`, so the tests exercise exactly what the trainer runs.
"""

from __future__ import annotations

import numpy as np

from sft.batching import PackingConfig, PaddingConfig, PaddingFreeConfig
from sft.data.plan import EpochPlan, Row
from sft.data.targets import IGNORE


def targets_of(mask: np.ndarray, pieces: np.ndarray, ids: np.ndarray | None = None) -> np.ndarray:
    """Shifted targets over flat arrays laid out as `pieces` (each piece its own row)."""
    targets = np.full(len(mask), IGNORE, dtype=np.int32)
    values = ids if ids is not None else np.ones(len(mask), dtype=np.int32)
    for _, a, b in pieces:
        targets[a : b - 1] = np.where(mask[a + 1 : b], values[a + 1 : b], IGNORE)
    return targets


def batching(kind: str, *, strategy: str = "bfd", capacity: int = 2048, **kw):
    if kind == "padding":
        return PaddingConfig(group_by_length=kw.get("group_by_length", False)).build(capacity)
    if kind == "padding_free":
        return PaddingFreeConfig(group_by_length=kw.get("group_by_length", False)).build(capacity)
    cfg = PackingConfig(strategy=strategy, replan_each_epoch=kw.get("replan_each_epoch", False))
    return cfg.build(capacity)


def plan_epoch(
    pieces, mask, *, kind, micro_batch_size, grad_accum, world_size, seed, epoch, capacity,
    strategy="bfd", replan_each_epoch=False, group_by_length=False,
) -> EpochPlan:  # fmt: skip
    b = batching(
        kind,
        strategy=strategy,
        capacity=capacity,
        replan_each_epoch=replan_each_epoch,
        group_by_length=group_by_length,
    )
    return b.plan(
        pieces,
        targets_of(mask, pieces),
        micro_batch_size=micro_batch_size,
        grad_accum=grad_accum,
        world_size=world_size,
        seed=seed,
        epoch=epoch,
    )


def build_rows(
    pieces, mask, *, kind, capacity, strategy, seed, epoch, replan_each_epoch,
    group_by_length=False, micro_batch_size=1,
) -> tuple[list[Row], int]:  # fmt: skip
    from sft.data.plan import sample_rows

    if kind in ("padding", "padding_free"):
        rows = sample_rows(
            pieces,
            seed=seed,
            epoch=epoch,
            group_by_length=group_by_length,
            micro_batch_size=micro_batch_size,
        )
        return rows, 0
    b = batching(kind, strategy=strategy, capacity=capacity, replan_each_epoch=replan_each_epoch)
    return b.rows(pieces, targets_of(mask, pieces), seed=seed, epoch=epoch)
