"""Pack planner: which samples share a row of `capacity` tokens (pure numpy, no torch).

`pack(lengths, capacity, strategy)` returns one int64 array of sample indices per pack.

Invariant (every strategy): each index of `lengths` appears in exactly one pack, every pack's
total length is <= `capacity`, and no sample is truncated or dropped. The same input and seed
give the same packs, in the same order, in any process. Invalid input (a length <= 0 or
> capacity, capacity <= 0, an unknown strategy) raises `PackingError`, a `ValueError` and a
`sft.errors.UserError` at once; samples longer than `capacity` must be cut first with
`sft.data.concat.split_overlong`.

Example, capacity 8, strategy "bfd" (sorted by length: 7, 5, 4, 3, 2, 1)::

    index:    0  1  2  3  4  5
    lengths: [5, 3, 2, 4, 1, 7]

    pack 0: [5, 4]  ->  7 + 1 = 8   # 1 went to the fullest pack it fits in
    pack 1: [0, 1]  ->  5 + 3 = 8
    pack 2: [3, 2]  ->  4 + 2 = 6

Strategies:

- ``bfd`` (default): best-fit decreasing. Samples sorted by (-length, index); each goes into
  the open pack with the least remaining room that still fits it, else into a new pack. Ties
  between packs with equal remaining room go to the pack that reached that room most recently.
  The plan is exactly the one a per-sample loop with that tie rule produces (tests compare the
  assignment, pack by pack, with such a loop); it is computed in grouped form: samples of equal
  length are handled as one run, and open packs are kept in one stack per remaining room, so a
  pack with room r takes r // l samples of length l at once.
- ``ffd``: first-fit decreasing (the seed paper's "greedy packing"): same order, each sample goes
  into the lowest-numbered pack that fits. Also exact, also grouped per length.
- ``first_fit_shuffle``: first fit over the samples in the order
  `np.random.default_rng(seed).permutation(len(lengths))`.
- ``next_fit``: dataset order, one open pack; a sample that does not fit closes it.

Packs are numbered in creation order; inside a pack, indices are in placement order.
`seed` only affects ``first_fit_shuffle``.

`PackStrategy` lists every `collator.strategy`: the four above plus ``random_concat``, the seed
paper's "random packing", which cuts samples instead of packing them (sft/data/concat.py).
"""

from __future__ import annotations

import itertools
from bisect import bisect_left
from dataclasses import dataclass
from numbers import Integral

import numpy as np

from sft.choice import Choice
from sft.errors import UserError


class PackStrategy(Choice):
    """`collator.strategy`: how packing fills rows (the one list of strategies)."""

    bfd = "bfd"
    ffd = "ffd"
    first_fit_shuffle = "first_fit_shuffle"
    next_fit = "next_fit"
    random_concat = "random_concat"


# the strategies `pack` plans; random_concat is planned by sft.data.concat.concat_chunks
STRATEGIES = tuple(s.value for s in PackStrategy if s is not PackStrategy.random_concat)

# Gaps of at most this many packs are scanned in Python; longer ones with numpy.
_SCAN_IN_PYTHON = 128


class PackingError(UserError, ValueError):
    """Invalid input to the pack planner (bad length, capacity or strategy)."""


@dataclass(frozen=True)
class PackStats:
    """Summary of a packing plan.

    n_samples: samples placed in the packs.
    n_packs: number of packs.
    total_tokens: sum of the placed samples' lengths.
    efficiency: total_tokens / (n_packs * capacity); 0.0 when there are no packs.
    lower_bound: ceil(total_tokens / capacity), the fewest packs any plan could use.
    """

    n_samples: int
    n_packs: int
    total_tokens: int
    efficiency: float
    lower_bound: int


def pack(
    lengths: np.ndarray, capacity: int, strategy: str = "bfd", seed: int = 0
) -> list[np.ndarray]:
    """Plan packs of total length <= `capacity`; returns the int64 sample indices of each pack.

    `strategy` is one of `STRATEGIES` (see the module docstring); `seed` drives the order of
    ``first_fit_shuffle`` only. The returned arrays may be views of one shared buffer.
    Raises `PackingError` (a `ValueError`) naming the first bad sample, bad capacity or strategy.
    """
    return _split(*pack_flat(lengths, capacity, strategy, seed))


def pack_flat(
    lengths: np.ndarray, capacity: int, strategy: str = "bfd", seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """`pack`'s plan flat: (int64 `members`, pack after pack; where each pack ends in them)."""
    if strategy not in STRATEGIES:
        raise PackingError(
            f"unknown packing strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}"
        )
    capacity = _check_capacity(capacity)
    lengths = _as_lengths(lengths)
    if lengths.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    _check_range(lengths, capacity)
    if strategy == "bfd":
        order, bin_of = _bfd(lengths, capacity)
    elif strategy == "ffd":
        order, bin_of = _ffd(lengths, capacity)
    elif strategy == "first_fit_shuffle":
        order = np.random.default_rng(seed).permutation(lengths.size)
        bin_of = _first_fit(lengths[order], capacity)
    else:
        return _next_fit(lengths, capacity)
    by_bin = np.argsort(bin_of, kind="stable")
    return order[by_bin].astype(np.int64, copy=False), np.cumsum(np.bincount(bin_of))


def pack_stats(lengths: np.ndarray, packs: list[np.ndarray], capacity: int) -> PackStats:
    """Count samples, packs and tokens of a plan and compare it with the lower bound."""
    capacity = _check_capacity(capacity)
    lengths = _as_lengths(lengths)
    n_samples = int(sum(len(p) for p in packs))
    if n_samples:
        total = int(lengths[np.concatenate(packs).astype(np.int64)].sum())
    else:
        total = 0
    n_packs = len(packs)
    efficiency = total / (n_packs * capacity) if n_packs else 0.0
    return PackStats(
        n_samples=n_samples,
        n_packs=n_packs,
        total_tokens=total,
        efficiency=efficiency,
        lower_bound=-(-total // capacity),
    )


# --------------------------------------------------------------------------- input checks


def _check_capacity(capacity: int) -> int:
    if isinstance(capacity, bool) or not isinstance(capacity, Integral) or capacity <= 0:
        raise PackingError(f"capacity must be a positive integer, got {capacity!r}")
    return int(capacity)


def _as_lengths(lengths: np.ndarray) -> np.ndarray:
    arr = np.asarray(lengths)
    if arr.ndim != 1:
        raise PackingError(f"lengths must be a 1-D array, got shape {arr.shape}")
    if arr.size == 0:
        return arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise PackingError(f"lengths must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _check_range(lengths: np.ndarray, capacity: int | None) -> None:
    bad = lengths <= 0 if capacity is None else (lengths <= 0) | (lengths > capacity)
    if not bad.any():
        return
    i = int(np.argmax(bad))
    n_bad = int(bad.sum())
    more = f" ({n_bad - 1} more)" if n_bad > 1 else ""
    if lengths[i] <= 0:
        raise PackingError(
            f"sample {i} has length {int(lengths[i])}; every sample needs >= 1 token{more}"
        )
    raise PackingError(
        f"sample {i} has length {int(lengths[i])} > capacity {capacity}{more}; "
        "cut long samples with sft.data.concat.split_overlong or drop them before packing"
    )


# --------------------------------------------------------------------------- strategies


def _sorted_desc(lengths: np.ndarray, capacity: int) -> np.ndarray:
    """Indices sorted by (-length, index)."""
    key = capacity - lengths
    if capacity < 2**15:
        key = key.astype(np.int16)  # lets numpy use its radix sort
    return np.argsort(key, kind="stable")


def _runs_desc(lengths: np.ndarray, capacity: int) -> tuple[list[int], list[int]]:
    """Distinct lengths in descending order and how many samples have each."""
    counts = np.bincount(lengths, minlength=capacity + 1)
    distinct = np.flatnonzero(counts)[::-1]
    return distinct.tolist(), counts[distinct].tolist()


def _bfd(lengths: np.ndarray, capacity: int) -> tuple[np.ndarray, np.ndarray]:
    """Best-fit decreasing; returns (order, pack of each sample in that order).

    `stacks[r]` holds the open packs whose remaining room is r, the most recent on top; `open_`
    marks the rooms with at least one pack. While the run of length l is placed, packs only
    leave rooms >= l and enter rooms < l (except the final partial pack), so the rooms to visit
    can be listed once per run. Placements are recorded as (pack, how many samples) in order,
    and expanded into one array at the end.
    """
    order = _sorted_desc(lengths, capacity)
    bins: list[int] = []  # the pack of each placement ...
    reps: list[int] = []  # ... and how many consecutive samples (in `order`) it takes
    stacks: list[list[int]] = [[] for _ in range(capacity)]
    open_ = np.zeros(capacity, dtype=bool)
    n_bins = 0
    for length, count in zip(*_runs_desc(lengths, capacity)):
        if 2 * length > capacity:  # fits no open pack (all fuller than half): one new pack each
            bins.extend(range(n_bins, n_bins + count))
            reps.extend([1] * count)
            stacks[capacity - length].extend(range(n_bins, n_bins + count))  # room 0: never read
            open_[capacity - length] = True
            n_bins += count
            continue
        for room in map(int, open_[length:].nonzero()[0] + length):  # listed once, read lazily
            stack = stacks[room]
            per_bin = room // length
            n_full = min(len(stack), count // per_bin)
            if n_full:
                taken = stack[-n_full:][::-1]
                del stack[-n_full:]
                bins.extend(taken)
                reps.extend([per_bin] * n_full)
                count -= n_full * per_bin
                left = room - per_bin * length
                if left:
                    stacks[left].extend(taken)
                    open_[left] = True
            if count and stack:  # 0 < count < per_bin: one pack takes the rest
                b = stack.pop()
                bins.append(b)
                reps.append(count)
                left = room - count * length
                stacks[left].append(b)
                open_[left] = True
                count = 0
            if not stack:
                open_[room] = False
            if not count:
                break
        if count:  # new packs, each taking capacity // length samples
            per_bin = capacity // length
            n_full, rest = divmod(count, per_bin)
            if n_full:
                bins.extend(range(n_bins, n_bins + n_full))
                reps.extend([per_bin] * n_full)
                left = capacity - per_bin * length
                if left:
                    stacks[left].extend(range(n_bins, n_bins + n_full))
                    open_[left] = True
                n_bins += n_full
            if rest:
                bins.append(n_bins)
                reps.append(rest)
                left = capacity - rest * length
                stacks[left].append(n_bins)
                open_[left] = True
                n_bins += 1
    return order, np.repeat(np.array(bins, dtype=np.int64), reps)


def _ffd(lengths: np.ndarray, capacity: int) -> tuple[np.ndarray, np.ndarray]:
    """First-fit decreasing; returns (order, pack of each sample in that order).

    For a run of `count` samples of length l, first fit sends them to the packs with room >= l
    from the lowest number up, each taking room // l of them, then to new packs.
    """
    order = _sorted_desc(lengths, capacity)
    bin_of = np.empty(lengths.size, dtype=np.int64)
    rooms = np.empty(lengths.size, dtype=np.int64)
    n_bins = 0
    pos = 0
    for length, count in zip(*_runs_desc(lengths, capacity)):
        if n_bins:
            fit = np.flatnonzero(rooms[:n_bins] >= length)
            if fit.size:
                per_bin = rooms[fit] // length
                filled = np.cumsum(per_bin)
                k = int(np.searchsorted(filled, count))  # first pack that takes the last one
                if k < fit.size:
                    fit = fit[: k + 1]
                    per_bin = per_bin[: k + 1]
                    per_bin[k] -= int(filled[k]) - count
                used = int(per_bin.sum())
                bin_of[pos : pos + used] = np.repeat(fit, per_bin)
                rooms[fit] -= per_bin * length
                pos += used
                count -= used
        if count:
            per_bin = capacity // length
            n_new = -(-count // per_bin)
            bin_of[pos : pos + count] = n_bins + np.arange(count) // per_bin
            rooms[n_bins : n_bins + n_new] = capacity - per_bin * length
            rooms[n_bins + n_new - 1] = capacity - (count - (n_new - 1) * per_bin) * length
            pos += count
            n_bins += n_new
    return order, bin_of


def _first_fit(lens: np.ndarray, capacity: int) -> np.ndarray:
    """First fit in the given order; returns the pack of each sample.

    Keeps the "staircase" of packs whose room beats every lower-numbered pack's room: numbers
    `stair_bin` (increasing) with rooms `stair_room` (strictly increasing). The first pack that
    fits length l is the first staircase pack with room >= l (a bisection). When that pack's
    room drops, the packs between it and the next staircase pack are rescanned for new steps.
    A virtual empty pack (room = capacity) always ends the staircase.
    """
    rooms: list[int] = []
    rooms_np = np.zeros(lens.size, dtype=np.int64)
    stair_bin: list[int] = []
    stair_room: list[int] = []
    bin_of = [0] * lens.size
    for p, length in enumerate(lens.tolist()):
        i = bisect_left(stair_room, length)
        if i == len(stair_room):  # open a new pack
            b = len(rooms)
            left = capacity - length
            rooms.append(left)
            rooms_np[b] = left
            if left > (stair_room[-1] if stair_room else 0):
                stair_bin.append(b)
                stair_room.append(left)
        else:
            b = stair_bin[i]
            left = rooms[b] - length
            rooms[b] = left
            rooms_np[b] = left
            floor = stair_room[i - 1] if i else 0
            stop = stair_bin[i + 1] if i + 1 < len(stair_bin) else len(rooms)
            if stop == b + 1:
                if left > floor:
                    stair_room[i] = left
                else:
                    del stair_bin[i], stair_room[i]
            else:
                new_bin: list[int] = []
                new_room: list[int] = []
                if left > floor:
                    new_bin.append(b)
                    new_room.append(left)
                    floor = left
                if stop - b - 1 <= _SCAN_IN_PYTHON:
                    for j in range(b + 1, stop):
                        r = rooms[j]
                        if r > floor:
                            new_bin.append(j)
                            new_room.append(r)
                            floor = r
                else:
                    gap = rooms_np[b + 1 : stop]
                    step = gap > floor
                    step[1:] &= gap[1:] > np.maximum.accumulate(gap)[:-1]
                    js = np.flatnonzero(step)
                    new_bin.extend((js + (b + 1)).tolist())
                    new_room.extend(gap[js].tolist())
                stair_bin[i : i + 1] = new_bin
                stair_room[i : i + 1] = new_room
        bin_of[p] = b
    return np.asarray(bin_of, dtype=np.int64)


def _next_fit(lengths: np.ndarray, capacity: int) -> tuple[np.ndarray, np.ndarray]:
    """Next fit: consecutive runs of samples, each as long as fits in `capacity`."""
    ends = np.concatenate(([0], np.cumsum(lengths)))
    # Where a pack starting at sample s stops (exclusive), for every s at once.
    stop = (np.searchsorted(ends, ends[:-1] + capacity, side="right") - 1).tolist()
    cuts = []
    s = stop[0]
    n = lengths.size
    while s < n:
        cuts.append(s)
        s = stop[s]
    return np.arange(n, dtype=np.int64), np.array([*cuts, n], dtype=np.int64)


def _split(values: np.ndarray, ends: np.ndarray) -> list[np.ndarray]:
    """Cut `values` into consecutive pieces ending at `ends` (faster than np.split)."""
    bounds = [0, *ends.tolist()]
    return [values[a:b] for a, b in itertools.pairwise(bounds)]


__all__ = ["STRATEGIES", "PackStats", "PackStrategy", "PackingError", "pack", "pack_stats"]
