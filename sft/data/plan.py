"""The epoch plan: which samples go into which row, micro-batch, rank and optimizer step.

A plan is a pure function of (pieces, batching choice, sizes, world size, seed, epoch), so every
rank computes the same plan without communication and a resumed run rebuilds it exactly. Each
batching choice (sft/batching/) builds the rows of an epoch with one of the row builders below;
`plan_steps` then cuts every choice's rows into steps the same way:

    pieces (row, start, end)                     one sample = one piece of the flat token arrays
      sample_rows:  shuffle -> rows of 1 piece (padding, padding_free)
      packed_rows:  pack(lengths) -> rows of whole pieces (bfd | ffd | first_fit_shuffle | next_fit)
      concat_rows:  shuffle, concatenate, cut every `capacity` tokens -> rows of fragments
      (both take `groups`, one id per piece, and a group mode: sft/data/grouping.py)
    -> plan_steps: steps of world_size x grad_accum micro-batches, dealt to ranks largest-first in
       snake order (starting one rank further every step) so every rank gets the same number of
       micro-batches and similar token counts, per step and over the epoch.

A segment is (a, b, piece): tokens a:b of the flat arrays, from piece `piece`.

Invariant: every token of every piece appears in exactly one segment of one step, except
(a) fragments of concat_rows that hold no trained target (counted in `dropped_fragments`) and
(b) at most world_size - 1 samples at the very end of an epoch that cannot be spread evenly over
the ranks (counted in `dropped_tail`; never with one process).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sft.data.concat import concat_chunks
from sft.data.grouping import concat_grouped, pack_grouped
from sft.data.packing import pack
from sft.data.targets import has_target

Segment = tuple[int, int, int]
Row = list[Segment]
MicroBatch = list[Row]


@dataclass
class EpochPlan:
    steps: list[list[list[MicroBatch]]]  # step -> rank -> micro-batches
    dropped_tail: int = 0  # samples of the epoch's uneven tail left out (several ranks only)
    dropped_fragments: int = 0  # concat_rows fragments without a target
    tokens: int = 0  # real tokens planned
    pack_efficiency: float | None = None  # real tokens / (rows x capacity); packed rows only

    def __len__(self) -> int:
        return len(self.steps)


def _rng(seed: int, epoch: int, salt: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, salt])


def row_tokens(row: Row) -> int:
    return sum(b - a for a, b, _ in row)


def _lengths(pieces: np.ndarray) -> np.ndarray:
    return (pieces[:, 2] - pieces[:, 1]).astype(np.int64)


def sample_rows(
    pieces: np.ndarray,
    *,
    seed: int,
    epoch: int,
    group_by_length: bool = False,
    micro_batch_size: int = 1,
) -> list[Row]:
    """One piece per row, in a seeded order; `group_by_length` sorts inside windows of 64
    micro-batches (longest first) and shuffles the micro-batches, to cut padding."""
    n = len(pieces)
    order = _rng(seed, epoch).permutation(n)
    if group_by_length:
        lengths = _lengths(pieces)
        window = 64 * micro_batch_size
        chunks = []
        for w in range(0, n, window):
            idx = order[w : w + window]
            idx = idx[np.argsort(-lengths[idx], kind="stable")]
            chunks += [idx[c : c + micro_batch_size] for c in range(0, len(idx), micro_batch_size)]
        perm = _rng(seed, epoch, 1).permutation(len(chunks))
        order = np.concatenate([chunks[i] for i in perm]) if chunks else order
    return [[(int(pieces[i, 1]), int(pieces[i, 2]), int(i))] for i in order]


def packed_rows(
    pieces: np.ndarray,
    *,
    capacity: int,
    strategy: str,
    seed: int,
    epoch: int,
    replan_each_epoch: bool = False,
    groups: np.ndarray | None = None,
    group_mode: str = "together",
) -> list[Row]:
    """Rows of whole pieces planned by `pack` (the packs are kept across epochs unless
    `replan_each_epoch`), in a seeded order that changes every epoch. With `groups` (one id per
    piece), `group_mode` decides which pieces may share a row (sft/data/grouping.py)."""
    plan_seed = seed + (epoch if replan_each_epoch else 0)
    if groups is None:
        packs = pack(_lengths(pieces), capacity, strategy=strategy, seed=plan_seed)
    else:
        packs = pack_grouped(_lengths(pieces), groups, capacity, strategy, group_mode, plan_seed)
    rows = [[(int(pieces[i, 1]), int(pieces[i, 2]), int(i)) for i in p] for p in packs]
    order = _rng(seed, epoch).permutation(len(rows))
    return [rows[i] for i in order]


def concat_rows(
    pieces: np.ndarray,
    targets: np.ndarray,
    *,
    capacity: int,
    seed: int,
    epoch: int,
    groups: np.ndarray | None = None,
    group_mode: str = "together",
) -> tuple[list[Row], int]:
    """The seed paper's random packing: rows of fragments, and how many fragments were dropped
    because they hold no target (see sft/data/targets.py); `groups` as in `packed_rows`."""
    rows, dropped = [], 0
    chunk_seed = seed * 100003 + epoch
    if groups is None:
        chunks = concat_chunks(_lengths(pieces), capacity, seed=chunk_seed)
    else:
        chunks = concat_grouped(_lengths(pieces), groups, capacity, group_mode, seed=chunk_seed)
    for chunk in chunks:
        row = []
        for i, s, e in chunk:
            a = int(pieces[i, 1]) + int(s)
            b = int(pieces[i, 1]) + int(e)
            if has_target(targets, a, b):
                row.append((a, b, int(i)))
            else:
                dropped += 1
        if row:
            rows.append(row)
    return rows, dropped


def _deal(
    micro_batches: list[MicroBatch], world_size: int, rotate: int = 0
) -> list[list[MicroBatch]]:
    """Deal micro-batches to ranks, largest first in snake order (equal counts, balanced tokens).

    The snake starts at rank `rotate % world_size` (the step index), so no rank always gets the
    largest micro-batch of every step.
    """
    sizes = [sum(row_tokens(r) for r in mb) for mb in micro_batches]
    order = sorted(range(len(micro_batches)), key=lambda i: (-sizes[i], i))
    ranks: list[list[MicroBatch]] = [[] for _ in range(world_size)]
    for k, i in enumerate(order):
        lap, pos = divmod(k, world_size)
        slot = pos if lap % 2 == 0 else world_size - 1 - pos
        ranks[(slot + rotate) % world_size].append(micro_batches[i])
    return ranks


def plan_steps(
    rows: list[Row],
    *,
    micro_batch_size: int,
    grad_accum: int,
    world_size: int,
    capacity: int | None = None,
    dropped_fragments: int = 0,
) -> EpochPlan:
    """Cut an epoch's rows into optimizer steps (see the module docstring). With `capacity`, the
    rows are packs of that many tokens and the plan reports its pack efficiency."""
    per_step_rows = micro_batch_size * grad_accum * world_size
    n_full = len(rows) // per_step_rows
    steps = []
    for s in range(n_full):
        step_rows = rows[s * per_step_rows : (s + 1) * per_step_rows]
        mbs = [
            step_rows[i : i + micro_batch_size] for i in range(0, len(step_rows), micro_batch_size)
        ]
        steps.append(_deal(mbs, world_size, rotate=s))
    tail = rows[n_full * per_step_rows :]
    dropped_tail = 0
    if tail:
        q = len(tail) // world_size
        keep, extra = tail[: q * world_size], tail[q * world_size :]
        singles = [[seg] for row in extra for seg in row]  # explode leftover rows into samples
        n_singles = (len(singles) // world_size) * world_size
        dropped_tail = len(singles) - n_singles
        keep = keep + singles[:n_singles]
        if keep:
            per_rank = len(keep) // world_size
            # rank r takes rows r, r + world, ...; then micro-batches of <= micro_batch_size rows
            by_rank = [keep[r::world_size][:per_rank] for r in range(world_size)]
            n_mb = -(-per_rank // micro_batch_size)
            steps.append(
                [
                    [rk[i * micro_batch_size : (i + 1) * micro_batch_size] for i in range(n_mb)]
                    for rk in by_rank
                ]
            )
    tokens = sum(row_tokens(r) for st in steps for rk in st for mb in rk for r in mb)
    plan = EpochPlan(
        steps=steps, dropped_tail=dropped_tail, dropped_fragments=dropped_fragments, tokens=tokens
    )
    if capacity is not None:
        n_row_slots = sum(len(mb) for st in steps for rk in st for mb in rk)
        plan.pack_efficiency = tokens / max(n_row_slots * capacity, 1)
    return plan
