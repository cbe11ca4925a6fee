"""The epoch plan: every piece exactly once, equal micro-batch counts, balanced ranks, determinism."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from tests.planning import build_rows, plan_epoch


def _data(n: int = 257, seed: int = 0, max_len: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """n pieces of lognormal lengths laid out flat; the first ~60% of each piece is the prompt."""
    rng = np.random.default_rng(seed)
    lens = np.clip(rng.lognormal(4.0, 0.8, n).astype(np.int64), 2, max_len)
    ends = np.cumsum(lens)
    pieces = np.stack([np.arange(n), ends - lens, ends], axis=1)
    mask = np.zeros(int(ends[-1]), dtype=bool)
    for a, b in zip(ends - lens, ends):
        mask[a + max(1, int(0.6 * (b - a))) : b] = True  # the answer: the tail of the piece
    return pieces, mask


def _segments(plan) -> list[tuple[int, int, int]]:
    return [seg for step in plan.steps for rank in step for mb in rank for row in mb for seg in row]


def _rank_tokens(step) -> list[int]:
    return [sum(b - a for mb in rank for row in mb for a, b, _ in row) for rank in step]


GRID = [
    (kind, world, accum)
    for kind in ("padding", "padding_free", "packing")
    for world in (1, 2, 3)
    for accum in (1, 3)
]


@pytest.mark.parametrize("kind,world,accum", GRID)
def test_every_piece_exactly_once_per_epoch(kind, world, accum):
    pieces, mask = _data()
    plan = plan_epoch(
        pieces,
        mask,
        kind=kind,
        micro_batch_size=4,
        grad_accum=accum,
        world_size=world,
        seed=3,
        epoch=0,
        capacity=512,
    )
    segs = _segments(plan)
    counts = Counter(p for _, _, p in segs)
    assert max(counts.values()) == 1  # never twice
    missing = set(range(len(pieces))) - set(counts)
    assert len(missing) == plan.dropped_tail < world  # only the uneven tail, counted
    if world == 1:
        assert plan.dropped_tail == 0
    for a, b, p in segs:  # whole pieces, untouched
        assert (a, b) == (pieces[p, 1], pieces[p, 2])
    assert plan.tokens == sum(b - a for a, b, _ in segs)


@pytest.mark.parametrize("kind,world,accum", GRID)
def test_ranks_get_equal_micro_batch_counts_and_balanced_tokens(kind, world, accum):
    pieces, mask = _data()
    mbs = 4
    plan = plan_epoch(
        pieces,
        mask,
        kind=kind,
        micro_batch_size=mbs,
        grad_accum=accum,
        world_size=world,
        seed=3,
        epoch=0,
        capacity=512,
    )
    assert len(plan) >= 2
    for i, step in enumerate(plan.steps):
        assert len(step) == world
        counts = {len(rank) for rank in step}
        assert len(counts) == 1  # every rank runs the same number of forward/backward passes
        assert all(1 <= len(mb) <= mbs for rank in step for mb in rank)
        if i < len(plan) - 1:  # full steps: grad_accum micro-batches of micro_batch_size rows
            assert counts == {accum} and all(len(mb) == mbs for rank in step for mb in rank)
            # largest-first snake dealing: ranks differ by at most one micro-batch's tokens
            biggest = max(
                sum(b - a for row in mb for a, b, _ in row) for rank in step for mb in rank
            )
            tokens = _rank_tokens(step)
            assert max(tokens) - min(tokens) <= biggest
    if world > 1:  # and over the epoch, ranks see nearly the same number of tokens
        per_rank = np.sum([_rank_tokens(s) for s in plan.steps], axis=0)
        assert per_rank.max() / per_rank.min() < 1.1


def test_packing_rows_respect_capacity_and_report_efficiency():
    pieces, mask = _data()
    plan = plan_epoch(
        pieces,
        mask,
        kind="packing",
        micro_batch_size=2,
        grad_accum=1,
        world_size=1,
        seed=0,
        epoch=0,
        capacity=512,
    )
    rows = [row for step in plan.steps for rank in step for mb in rank for row in mb]
    assert all(sum(b - a for a, b, _ in row) <= 512 for row in rows)
    assert max(len(r) for r in rows) >= 3  # real packing happened
    lengths = pieces[:, 2] - pieces[:, 1]
    assert len(rows) >= -(-int(lengths.sum()) // 512)
    assert plan.pack_efficiency == pytest.approx(lengths.sum() / (len(rows) * 512))
    assert 0.9 < plan.pack_efficiency <= 1.0


@pytest.mark.parametrize("mask_kind", ["answers", "all"])
def test_random_concat_covers_every_token_once_except_counted_fragments(mask_kind):
    pieces, mask = _data()
    if mask_kind == "all":
        mask[:] = True  # only 1-token fragments (no target after the first token) are dropped
    capacity = 97
    rows, dropped = build_rows(
        pieces,
        mask,
        kind="packing",
        capacity=capacity,
        strategy="random_concat",
        seed=5,
        epoch=0,
        replan_each_epoch=False,
    )
    covered = np.zeros(len(mask), dtype=np.int64)
    for row in rows:
        assert sum(b - a for a, b, _ in row) <= capacity
        for a, b, p in row:
            assert pieces[p, 1] <= a < b <= pieces[p, 2]  # a fragment of its own piece
            assert mask[a + 1 : b].any()  # every kept fragment trains something
            covered[a:b] += 1
    assert covered.max() == 1  # no token twice
    holes = np.flatnonzero(covered == 0)
    if mask_kind == "all":
        assert dropped > 0 and len(holes) == dropped  # each hole is one dropped 1-token fragment
    else:
        assert dropped > 0  # prompt-only fragments exist with these cuts
        runs = 1 + int(np.sum(np.diff(holes) > 1)) if len(holes) else 0
        assert runs <= dropped <= len(holes)  # every hole is made of dropped, counted fragments
        # a hole holds no target except possibly at the first token of a fragment
        assert mask[holes].sum() < dropped
    plan = plan_epoch(
        pieces,
        mask,
        kind="packing",
        strategy="random_concat",
        micro_batch_size=3,
        grad_accum=1,
        world_size=1,
        seed=5,
        epoch=0,
        capacity=capacity,
    )
    assert plan.dropped_fragments == dropped and plan.dropped_tail == 0
    assert plan.tokens == int((covered == 1).sum())


@pytest.mark.parametrize(
    "kind,strategy",
    [
        ("padding", "bfd"),
        ("packing", "bfd"),
        ("packing", "random_concat"),
        ("packing", "first_fit_shuffle"),
    ],
)
def test_plan_is_deterministic(kind, strategy):
    pieces, mask = _data()
    args = {
        "kind": kind,
        "micro_batch_size": 3,
        "grad_accum": 2,
        "world_size": 2,
        "capacity": 512,
        "strategy": strategy,
    }
    a = plan_epoch(pieces, mask, seed=1, epoch=0, **args)
    b = plan_epoch(pieces, mask, seed=1, epoch=0, **args)
    assert a.steps == b.steps and a.dropped_tail == b.dropped_tail
    c = plan_epoch(pieces, mask, seed=1, epoch=1, **args)
    d = plan_epoch(pieces, mask, seed=2, epoch=0, **args)
    assert c.steps != a.steps and d.steps != a.steps  # reshuffled every epoch, and per seed


def test_packs_are_kept_across_epochs_unless_replanned():
    pieces, mask = _data()

    def packs(epoch: int, replan: bool) -> set[tuple]:
        rows, _ = build_rows(
            pieces,
            mask,
            kind="packing",
            capacity=512,
            strategy="first_fit_shuffle",
            seed=0,
            epoch=epoch,
            replan_each_epoch=replan,
        )
        return {tuple(sorted(p for _, _, p in row)) for row in rows}

    assert packs(0, False) == packs(1, False)  # same packs, in a new order
    assert packs(0, True) != packs(1, True)


def test_group_by_length_cuts_padding():
    pieces, mask = _data(n=1024)
    lengths = pieces[:, 2] - pieces[:, 1]

    def padded(group: bool) -> int:
        rows, _ = build_rows(
            pieces,
            mask,
            kind="padding",
            capacity=0,
            strategy="bfd",
            seed=0,
            epoch=0,
            replan_each_epoch=False,
            group_by_length=group,
            micro_batch_size=8,
        )
        order = [row[0][2] for row in rows]
        assert sorted(order) == list(range(len(pieces)))
        return sum(8 * int(lengths[order[i : i + 8]].max()) for i in range(0, len(order), 8))

    assert padded(True) < 0.8 * padded(False)
