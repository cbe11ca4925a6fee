"""What is packed with what: `collator.group_by=FIELD` with `collator.group_mode=together|apart`.

`groups` holds one int per sample: the id of the value of FIELD in the sample's data row
(sft/data/dataset.py builds it). The planners of sft/data/packing.py only see lengths; these
functions decide which samples may share a pack:

    together  every pack holds samples of one group: the planner runs on each group alone
              (group 0 first), so each group ends with its own partly filled pack
    apart     the ungrouped plan, with samples exchanged between packs so that groups mix: the
              number of packs and the tokens - hence efficiency and step counts - are exactly
              those of the ungrouped plan. Each length's samples, sorted by group, are dealt to
              that length's slots in order of a per-slot phase that spreads each pack's slots
              evenly around a circle (so a pack's samples come from far apart in group
              order); then every pack of >= 2 samples still holding one group swaps one sample
              with a sample of another group (of the same length if one can, else of the
              nearest length that keeps both packs within capacity) from a pack that stays
              mixed (a bounded scan; a pack with no such partner stays single-valued).

Random packing (`random_concat`) takes the same option: together = shuffle and cut each group
alone; apart = the shuffle interleaves the groups evenly before the concatenation is cut.

Invariant (both modes, every strategy): every sample is in exactly one pack, no pack exceeds
`capacity`; together: every pack is single-valued; apart: as many packs holding as many tokens
as the ungrouped plan (same efficiency and step counts), and no exchange leaves a pack
single-valued that was mixed. `group_stats` measures how mixed a plan is.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass

import numpy as np

from sft.choice import Choice
from sft.data.concat import concat_chunks
from sft.data.packing import _split, pack_flat

_SCAN = 24  # candidates tried per single-valued pack when un-mixing it
_GOLDEN = (math.sqrt(5) - 1) / 2


class GroupMode(Choice):
    """`collator.group_mode`: how `collator.group_by` groups shape the packs."""

    together = "together"
    apart = "apart"


@dataclass(frozen=True)
class GroupStats:
    """How a plan mixes groups.

    packs: number of packs; multi: packs of >= 2 samples; mixed: those holding >= 2 groups;
    mixed_fraction: mixed / multi (0.0 without multi-sample packs); groups_per_pack: mean
    number of distinct groups per pack.
    """

    packs: int
    multi: int
    mixed: int
    mixed_fraction: float
    groups_per_pack: float

    def to_dict(self) -> dict:
        return {
            "packs": self.packs,
            "multi_sample_packs": self.multi,
            "mixed_packs": self.mixed,
            "mixed_fraction": self.mixed_fraction,
            "groups_per_pack": self.groups_per_pack,
        }


def group_ids(values: list) -> tuple[np.ndarray, list[str]]:
    """(int32 id per value, the distinct values as strings in order of first appearance)."""
    names: dict[str, int] = {}
    ids = np.fromiter(
        (names.setdefault(str(v), len(names)) for v in values), dtype=np.int32, count=len(values)
    )
    return ids, list(names)


def pack_grouped(
    lengths: np.ndarray,
    groups: np.ndarray,
    capacity: int,
    strategy: str,
    mode: str,
    seed: int = 0,
) -> list[np.ndarray]:
    """`pack(lengths, capacity, strategy, seed)` under a group mode (see the module docstring)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    groups = _as_groups(groups, lengths.size)
    if mode == GroupMode.together:
        return _split(*_together(lengths, groups, capacity, strategy, seed))
    if mode != GroupMode.apart:
        raise ValueError(f"unknown group mode {mode!r}; choose one of {GroupMode.values()}")
    members, ends = pack_flat(lengths, capacity, strategy, seed)
    if members.size and groups.max(initial=0) > 0:
        members, slots = _spread(members, ends, lengths, groups)
        _unmix(members, ends, lengths, groups, capacity, slots)
    return _split(members, ends)


def concat_grouped(
    lengths: np.ndarray, groups: np.ndarray, capacity: int, mode: str, seed: int = 0
) -> list[list[tuple[int, int, int]]]:
    """`concat_chunks(lengths, capacity, seed)` under a group mode (see the module docstring)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    groups = _as_groups(groups, lengths.size)
    if mode == GroupMode.together:
        chunks: list[list[tuple[int, int, int]]] = []
        for idx in _by_group(groups):
            back = idx.tolist()
            for chunk in concat_chunks(lengths[idx], capacity, seed=seed):
                chunks.append([(back[i], s, e) for i, s, e in chunk])
        return chunks
    if mode != GroupMode.apart:
        raise ValueError(f"unknown group mode {mode!r}; choose one of {GroupMode.values()}")
    perm = np.random.default_rng(seed).permutation(lengths.size)
    by_group = perm[np.argsort(groups[perm], kind="stable")]  # shuffled inside each group
    sizes = np.bincount(groups)
    first = np.cumsum(sizes) - sizes
    g = groups[by_group]
    rank = np.arange(lengths.size) - first[g]
    key = (rank + 0.5) / sizes[g]  # evenly spaced in [0, 1) within each group
    return concat_chunks(lengths, capacity, order=by_group[np.argsort(key, kind="stable")])


def group_stats(packs: list[np.ndarray], groups: np.ndarray) -> GroupStats:
    """Count the packs holding several samples and how many of those mix groups."""
    packs = [p for p in packs if len(p)]
    if not packs:
        return GroupStats(0, 0, 0, 0.0, 0.0)
    sizes = np.fromiter((len(p) for p in packs), dtype=np.int64, count=len(packs))
    members = np.concatenate(packs).astype(np.int64)
    pack_of = np.repeat(np.arange(len(packs)), sizes)
    pairs = np.unique(pack_of * (int(groups.max(initial=0)) + 1) + groups[members])
    distinct = np.bincount(pairs // (int(groups.max(initial=0)) + 1), minlength=len(packs))
    multi = int((sizes >= 2).sum())
    mixed = int((distinct >= 2).sum())
    return GroupStats(
        packs=len(packs),
        multi=multi,
        mixed=mixed,
        mixed_fraction=mixed / multi if multi else 0.0,
        groups_per_pack=float(distinct.mean()),
    )


# --------------------------------------------------------------------------- internals


def _as_groups(groups: np.ndarray, n: int) -> np.ndarray:
    groups = np.asarray(groups)
    if groups.shape != (n,) or (n and groups.dtype.kind not in "iu"):
        raise ValueError(f"groups must be {n} integers (one per sample), got shape {groups.shape}")
    if n and groups.min() < 0:
        raise ValueError("group ids must be >= 0")
    return groups.astype(np.int64, copy=False)


def _by_group(groups: np.ndarray) -> list[np.ndarray]:
    """Sample indices of each non-empty group, group 0 first, in index order."""
    order = np.argsort(groups, kind="stable")
    ends = np.cumsum(np.bincount(groups))
    return [idx for idx in _split(order, ends) if idx.size]


def _together(
    lengths: np.ndarray, groups: np.ndarray, capacity: int, strategy: str, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    members, ends, base = [], [], 0
    for idx in _by_group(groups):
        m, e = pack_flat(lengths[idx], capacity, strategy, seed)
        members.append(idx[m])
        ends.append(e + base)
        base += idx.size
    if not members:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(members), np.concatenate(ends)


def _length_blocks(sorted_lengths: np.ndarray, capacity: int) -> tuple[np.ndarray, np.ndarray]:
    """(first position, size) of each length's block in an array sorted by length, per length."""
    counts = np.bincount(sorted_lengths, minlength=capacity + 1)
    return np.cumsum(counts) - counts, counts


def _sort_key(values: np.ndarray) -> np.ndarray:
    """`values` as int16 when they fit (numpy's stable sort is then a radix sort)."""
    return values.astype(np.int16) if values.max(initial=0) < 2**15 else values


def _spread(
    members: np.ndarray, ends: np.ndarray, lengths: np.ndarray, groups: np.ndarray
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Deal each length's samples, sorted by group, to that length's slots sorted by phase;
    returns the new members and, for `_unmix`, (the slots in (length, phase) order, each slot's
    length, each slot's pack): a slot keeps its length, as samples move within a length.

    Slot j of a pack of k samples, pack number p, has phase frac(p * golden + j / k): the slots
    of one pack sit 1/k apart on the circle, so they take samples 1/k apart in the group order
    of their length - different groups unless one group holds most samples of those lengths.
    """
    sizes = np.diff(ends, prepend=0)
    pack_of = np.repeat(np.arange(sizes.size, dtype=np.int32), sizes)
    # 16-bit fixed point: frac(p * golden) per pack, plus j / k for slot j of k (int32 is enough)
    base = ((np.arange(sizes.size, dtype=np.int64) * 40503) & 0xFFFF).astype(np.int32)
    step = (65536 // np.maximum(sizes, 1)).astype(np.int32)
    first = (ends - sizes).astype(np.int32) if members.size < 2**31 else ends - sizes
    j = np.arange(members.size, dtype=first.dtype) - first[pack_of]
    phase = ((base[pack_of] + j * step[pack_of]) & 0xFFFF).astype(np.uint16)
    by_phase = np.argsort(phase, kind="stable")
    slot_len = lengths[members]
    slot_order = by_phase[np.argsort(_sort_key(slot_len[by_phase]), kind="stable")]
    n_groups = int(groups.max()) + 1
    if (int(lengths.max()) + 1) * n_groups <= 2**16:  # one radix sort on (length, group)
        sample_order = np.argsort((lengths * n_groups + groups).astype(np.uint16), kind="stable")
    else:
        by_group = np.argsort(_sort_key(groups), kind="stable")
        sample_order = by_group[np.argsort(_sort_key(lengths[by_group]), kind="stable")]
    out = np.empty_like(members)
    out[slot_order] = sample_order  # both sorted by length: block for block, rank for rank
    return out, (slot_order, slot_len, pack_of)


def _unmix(
    members: np.ndarray,
    ends: np.ndarray,
    lengths: np.ndarray,
    groups: np.ndarray,
    capacity: int,
    slots: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    """Swap one sample of every single-valued pack of >= 2 samples with a sample of another
    group from a pack that stays mixed, both packs still fitting `capacity` (in place).

    The pack's samples are tried shortest first (short ones have the most partners that fit);
    candidates come from the slots of the same length first, then of the nearest lengths
    (`slot_order` lists slots by their length at the start), at most `_SCAN` per sample and
    4 x `_SCAN` per pack; a slot's current length is always read from its current sample.
    """
    slot_order, slot_len, slot_pack = slots
    sizes = np.diff(ends, prepend=0)
    starts = ends - sizes
    slot_group = groups[members]
    low = np.minimum.reduceat(slot_group, starts)
    high = np.maximum.reduceat(slot_group, starts)
    single = np.flatnonzero((sizes >= 2) & (low == high))
    if not single.size:
        return
    room = capacity - np.add.reduceat(slot_len, starts)
    block_start, block_size = _length_blocks(slot_len, capacity)
    present = np.flatnonzero(block_size).tolist()  # lengths with slots, ascending
    cursor: dict[int, int] = {}
    for p in single.tolist():
        a0, a1 = int(starts[p]), int(ends[p])
        g = int(slot_group[a0])
        budget = 4 * _SCAN  # candidates tried for the whole pack, shortest samples first
        for la, a in sorted((int(lengths[members[a]]), a) for a in range(a0, a1)):
            left = _swap_partner(
                p, a, la, g, members, lengths, slot_group, slot_pack, slot_order, starts, ends,
                room, block_start, block_size, present, cursor, min(budget, _SCAN),
            )  # fmt: skip
            if left < 0:
                break
            budget -= min(budget, _SCAN) - left
            if budget <= 0:
                break


def _outward(present: list[int], length: int, longest: int):
    """The lengths of `present` (ascending) from `length` outward, none above `longest`."""
    i = bisect_left(present, length)
    lo, hi = i - 1, i
    while lo >= 0 or (hi < len(present) and present[hi] <= longest):
        if hi < len(present) and present[hi] <= longest:
            yield present[hi]
            hi += 1
        if lo >= 0:
            yield present[lo]
            lo -= 1


def _swap_partner(
    p, a, la, g, members, lengths, slot_group, slot_pack, slot_order, starts, ends, room,
    block_start, block_size, present, cursor, budget,
) -> int:  # fmt: skip
    """Swap slot `a` (pack `p`, length `la`, group `g`) with the first fitting partner among at
    most `budget` candidates; returns the budget left, or -1 once swapped."""
    for lb in _outward(present, la, la + int(room[p])):
        m, first = int(block_size[lb]), int(block_start[lb])
        cur = cursor.get(lb, 0)
        for t in range(min(budget, m)):
            b = int(slot_order[first + (cur + t) % m])
            q, h = int(slot_pack[b]), int(slot_group[b])
            if q == p or h == g:
                continue
            lq = int(lengths[members[b]])
            if lq - la > room[p] or la - lq > room[q]:
                continue  # one of the two packs would overflow
            q0, q1 = int(starts[q]), int(ends[q])
            if q1 - q0 > 1 and sum(x != g for x in slot_group[q0:q1].tolist()) < 2:
                continue  # b is q's only sample of another group: q would become single-valued
            members[a], members[b] = members[b], members[a]
            slot_group[a], slot_group[b] = h, g
            room[p] += la - lq
            room[q] -= la - lq
            cursor[lb] = (cur + t + 1) % m
            return -1
        budget -= min(budget, m)
        if budget <= 0:
            break
    return budget


__all__ = [
    "GroupMode",
    "GroupStats",
    "concat_grouped",
    "group_ids",
    "group_stats",
    "pack_grouped",
]
