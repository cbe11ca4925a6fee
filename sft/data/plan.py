"""The epoch plan: which samples go into which row, micro-batch, rank and optimizer step.

A plan is a pure function of (pieces, collator kind, sizes, world size, seed, epoch), so every rank
computes the same plan without communication and a resumed run rebuilds it exactly.

    pieces (row, start, end)                     one sample = one piece of the flat token arrays
      padding / padding_free: shuffle -> rows of 1 piece -> micro-batches of `micro_batch_size` rows
      packing (bfd|ffd|first_fit_shuffle|next_fit): pack(lengths) -> rows of whole pieces
      packing random_concat: shuffle, concatenate, cut every `capacity` tokens -> rows of fragments
    -> steps of world_size x grad_accum micro-batches, dealt to ranks largest-first in snake order
       (starting one rank further every step) so every rank gets the same number of
       micro-batches and similar token counts, per step and over the epoch.

A segment is (a, b, piece): tokens a:b of the flat arrays, from piece `piece`.

Invariant: every token of every piece appears in exactly one segment of one step, except
(a) fragments of random_concat that hold no trained target (counted in `dropped_fragments`) and
(b) at most world_size - 1 samples at the very end of an epoch that cannot be spread evenly over
the ranks (counted in `dropped_tail`; never with one process).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sft.data.packing import concat_chunks, pack

Segment = tuple[int, int, int]
Row = list[Segment]
MicroBatch = list[Row]


@dataclass
class EpochPlan:
    steps: list[list[list[MicroBatch]]]  # step -> rank -> micro-batches
    n_rows: int
    capacity: int
    dropped_tail: int = 0
    dropped_fragments: int = 0
    tokens: int = 0
    stats: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.steps)


def _rng(seed: int, epoch: int, salt: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, salt])


def _row_tokens(row: Row) -> int:
    return sum(b - a for a, b, _ in row)


def build_rows(
    pieces: np.ndarray,
    mask: np.ndarray,
    *,
    kind: str,
    capacity: int,
    strategy: str,
    seed: int,
    epoch: int,
    replan_each_epoch: bool,
    group_by_length: bool = False,
    micro_batch_size: int = 1,
) -> tuple[list[Row], int]:
    """Rows for one epoch, in training order, and the number of fragments dropped (random_concat)."""
    n = len(pieces)
    lengths = (pieces[:, 2] - pieces[:, 1]).astype(np.int64)
    if kind in ("padding", "padding_free"):
        order = _rng(seed, epoch).permutation(n)
        if group_by_length:
            window = 64 * micro_batch_size
            chunks = []
            for w in range(0, n, window):
                idx = order[w : w + window]
                idx = idx[np.argsort(-lengths[idx], kind="stable")]
                chunks += [
                    idx[c : c + micro_batch_size] for c in range(0, len(idx), micro_batch_size)
                ]
            perm = _rng(seed, epoch, 1).permutation(len(chunks))
            order = np.concatenate([chunks[i] for i in perm]) if chunks else order
        return [[(int(pieces[i, 1]), int(pieces[i, 2]), int(i))] for i in order], 0
    if strategy == "random_concat":
        rows, dropped = [], 0
        for chunk in concat_chunks(lengths, capacity, seed=seed * 100003 + epoch):
            row = []
            for i, s, e in chunk:
                a = int(pieces[i, 1]) + int(s)
                b = int(pieces[i, 1]) + int(e)
                if mask[a + 1 : b].any():  # a fragment's first token is never a target
                    row.append((a, b, int(i)))
                else:
                    dropped += 1
            if row:
                rows.append(row)
        return rows, dropped
    packs = pack(
        lengths, capacity, strategy=strategy, seed=seed + (epoch if replan_each_epoch else 0)
    )
    rows = [[(int(pieces[i, 1]), int(pieces[i, 2]), int(i)) for i in p] for p in packs]
    order = _rng(seed, epoch).permutation(len(rows))
    return [rows[i] for i in order], 0


def _deal(
    micro_batches: list[MicroBatch], world_size: int, rotate: int = 0
) -> list[list[MicroBatch]]:
    """Deal micro-batches to ranks, largest first in snake order (equal counts, balanced tokens).

    The snake starts at rank `rotate % world_size` (the step index), so no rank always gets the
    largest micro-batch of every step.
    """
    sizes = [sum(_row_tokens(r) for r in mb) for mb in micro_batches]
    order = sorted(range(len(micro_batches)), key=lambda i: (-sizes[i], i))
    ranks: list[list[MicroBatch]] = [[] for _ in range(world_size)]
    for k, i in enumerate(order):
        lap, pos = divmod(k, world_size)
        slot = pos if lap % 2 == 0 else world_size - 1 - pos
        ranks[(slot + rotate) % world_size].append(micro_batches[i])
    return ranks


def plan_epoch(
    pieces: np.ndarray,
    mask: np.ndarray,
    *,
    kind: str,
    micro_batch_size: int,
    grad_accum: int,
    world_size: int,
    seed: int,
    epoch: int,
    capacity: int,
    strategy: str = "bfd",
    replan_each_epoch: bool = False,
    group_by_length: bool = False,
) -> EpochPlan:
    """The full plan of one epoch (see the module docstring)."""
    rows, dropped_fragments = build_rows(
        pieces,
        mask,
        kind=kind,
        capacity=capacity,
        strategy=strategy,
        seed=seed,
        epoch=epoch,
        replan_each_epoch=replan_each_epoch,
        group_by_length=group_by_length,
        micro_batch_size=micro_batch_size,
    )
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
    tokens = sum(_row_tokens(r) for st in steps for rk in st for mb in rk for r in mb)
    plan = EpochPlan(
        steps=steps,
        n_rows=len(rows),
        capacity=capacity,
        dropped_tail=dropped_tail,
        dropped_fragments=dropped_fragments,
        tokens=tokens,
    )
    if kind == "packing":
        n_row_slots = sum(len(mb) for st in steps for rk in st for mb in rk)
        plan.stats["pack_efficiency"] = tokens / max(n_row_slots * capacity, 1)
    return plan
