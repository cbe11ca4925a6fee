"""Pack planner: invariants on random inputs, and equality with slow per-sample references."""

from __future__ import annotations

import hashlib
import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sft.data import packing
from sft.data.concat import concat_chunks, split_overlong
from sft.data.packing import STRATEGIES, PackingError, pack, pack_stats
from sft.errors import UserError

ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- slow references


def _order_desc(lengths: np.ndarray) -> list[int]:
    return sorted(range(len(lengths)), key=lambda i: (-int(lengths[i]), i))


def ref_bfd(lengths: np.ndarray, capacity: int) -> list[list[int]]:
    """Per-sample best fit decreasing; ties: the pack that reached its room most recently."""
    packs: list[list[int]] = []
    room: list[int] = []
    stamp: list[int] = []
    for t, i in enumerate(_order_desc(lengths)):
        length = int(lengths[i])
        fits = [b for b in range(len(packs)) if room[b] >= length]
        if fits:
            b = min(fits, key=lambda b: (room[b], -stamp[b]))
        else:
            b = len(packs)
            packs.append([])
            room.append(capacity)
            stamp.append(t)
        packs[b].append(i)
        room[b] -= length
        stamp[b] = t
    return packs


def ref_first_fit(lengths: np.ndarray, capacity: int, order: list[int]) -> list[list[int]]:
    packs: list[list[int]] = []
    room: list[int] = []
    for i in order:
        length = int(lengths[i])
        b = next((b for b in range(len(packs)) if room[b] >= length), len(packs))
        if b == len(packs):
            packs.append([])
            room.append(capacity)
        packs[b].append(i)
        room[b] -= length
    return packs


def ref_next_fit(lengths: np.ndarray, capacity: int) -> list[list[int]]:
    packs: list[list[int]] = []
    load = capacity + 1
    for i, length in enumerate(lengths.tolist()):
        if load + length > capacity:
            packs.append([])
            load = 0
        packs[-1].append(i)
        load += length
    return packs


# --------------------------------------------------------------------------- helpers


def random_case(rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Small inputs that stress ties: few distinct lengths, lengths equal to capacity, length 1."""
    capacity = int(rng.integers(1, 40))
    n = int(rng.integers(1, 120))
    kind = rng.integers(4)
    if kind == 0:
        lengths = rng.integers(1, capacity + 1, n)
    elif kind == 1:  # few distinct values: long runs of equal lengths
        lengths = rng.choice(rng.integers(1, capacity + 1, 3), n)
    elif kind == 2:  # mostly small items, many per pack
        lengths = rng.integers(1, max(1, capacity // 4) + 1, n)
    else:  # heavy tail, clipped
        lengths = np.clip(np.rint(rng.lognormal(np.log(capacity / 4 + 1), 1.0, n)), 1, capacity)
    return lengths.astype(np.int64), capacity


def as_lists(packs: list[np.ndarray]) -> list[list[int]]:
    return [p.tolist() for p in packs]


def check_plan(lengths: np.ndarray, capacity: int, packs: list[np.ndarray]) -> None:
    for p in packs:
        assert p.dtype == np.int64 and p.ndim == 1 and p.size > 0
        assert int(lengths[p].sum()) <= capacity
    flat = np.concatenate(packs) if packs else np.empty(0, np.int64)
    assert np.array_equal(np.sort(flat), np.arange(len(lengths)))


# --------------------------------------------------------------------------- tests


def test_docstring_example() -> None:
    lengths = np.array([5, 3, 2, 4, 1, 7])
    assert as_lists(pack(lengths, 8)) == [[5, 4], [0, 1], [3, 2]]
    assert as_lists(pack(lengths, 8, "ffd")) == [[5, 4], [0, 1], [3, 2]]
    assert as_lists(pack(lengths, 8, "next_fit")) == [[0, 1], [2, 3, 4], [5]]


def test_tie_rules() -> None:
    # Capacity 10: both 6s leave room 4. bfd gives the 4 to the pack that reached room 4 most
    # recently (pack 1), then the 3 to pack 0; ffd gives the 4 to pack 0 and the 3 to pack 1.
    lengths = np.array([6, 6, 4, 3])
    assert as_lists(pack(lengths, 10, "bfd")) == [[0, 3], [1, 2]]
    assert as_lists(pack(lengths, 10, "ffd")) == [[0, 2], [1, 3]]
    # Equal lengths are placed in index order: the 3s (samples 1, 3) open packs 0 and 1, then
    # sample 0 joins the most recent room-2 pack (1) and sample 2 the other one.
    assert as_lists(pack(np.array([2, 3, 2, 3]), 5)) == [[1, 2], [3, 0]]


def test_bfd_and_ffd_differ_somewhere() -> None:
    rng = np.random.default_rng(1)
    differ = 0
    for _ in range(200):
        lengths, capacity = random_case(rng)
        differ += as_lists(pack(lengths, capacity, "bfd")) != as_lists(
            pack(lengths, capacity, "ffd")
        )
    assert differ > 5  # the two strategies are really different code paths


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_invariants_on_random_inputs(strategy: str) -> None:
    rng = np.random.default_rng(0)
    multi = 0
    for _ in range(300):
        lengths, capacity = random_case(rng)
        packs = pack(lengths, capacity, strategy, seed=int(rng.integers(100)))
        check_plan(lengths, capacity, packs)
        multi += sum(len(p) > 1 for p in packs)
    assert multi > 300  # packs really hold several samples


def test_bfd_equals_reference() -> None:
    rng = np.random.default_rng(2)
    for _ in range(1000):
        lengths, capacity = random_case(rng)
        assert as_lists(pack(lengths, capacity, "bfd")) == ref_bfd(lengths, capacity), (
            lengths.tolist(),
            capacity,
        )


def test_ffd_equals_reference() -> None:
    rng = np.random.default_rng(3)
    for _ in range(1000):
        lengths, capacity = random_case(rng)
        expected = ref_first_fit(lengths, capacity, _order_desc(lengths))
        assert as_lists(pack(lengths, capacity, "ffd")) == expected, (lengths.tolist(), capacity)


@pytest.mark.parametrize("scan_in_python", [0, 8, 10**9])
def test_first_fit_shuffle_equals_reference(
    scan_in_python: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The threshold picks how gaps of the staircase are rescanned (numpy / mixed / Python).
    monkeypatch.setattr(packing, "_SCAN_IN_PYTHON", scan_in_python)
    rng = np.random.default_rng(4)
    for _ in range(700):
        lengths, capacity = random_case(rng)
        seed = int(rng.integers(1000))
        order = np.random.default_rng(seed).permutation(len(lengths)).tolist()
        expected = ref_first_fit(lengths, capacity, order)
        got = pack(lengths, capacity, "first_fit_shuffle", seed=seed)
        assert as_lists(got) == expected, (lengths.tolist(), capacity, seed)


def test_seed_changes_only_first_fit_shuffle() -> None:
    rng = np.random.default_rng(6)
    lengths = rng.integers(1, 50, 300)
    a = as_lists(pack(lengths, 64, "first_fit_shuffle", seed=0))
    assert a == as_lists(pack(lengths, 64, "first_fit_shuffle", seed=0))
    assert a != as_lists(pack(lengths, 64, "first_fit_shuffle", seed=1))
    for strategy in ("bfd", "ffd", "next_fit"):
        assert as_lists(pack(lengths, 64, strategy, seed=0)) == as_lists(
            pack(lengths, 64, strategy, seed=1)
        )


def test_next_fit_keeps_dataset_order() -> None:
    rng = np.random.default_rng(8)
    for _ in range(300):
        lengths, capacity = random_case(rng)
        packs = pack(lengths, capacity, "next_fit")
        assert np.array_equal(np.concatenate(packs), np.arange(len(lengths)))
        assert as_lists(packs) == ref_next_fit(lengths, capacity)
        for p, q in itertools.pairwise(packs):  # each pack is closed by a sample that did not fit
            assert lengths[p].sum() + lengths[q[0]] > capacity


def _digest(packs: list[np.ndarray]) -> str:
    h = hashlib.sha256()
    for p in packs:
        h.update(p.tobytes() + b"|")
    return h.hexdigest()


def test_deterministic_across_processes() -> None:
    code = (
        "import numpy as np, hashlib\n"
        "from sft.data.packing import pack, STRATEGIES\n"
        "x = np.random.default_rng(9).integers(1, 500, 5000)\n"
        "for s in STRATEGIES:\n"
        "    h = hashlib.sha256()\n"
        "    for p in pack(x, 512, s, seed=3): h.update(p.tobytes() + b'|')\n"
        "    print(h.hexdigest())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    x = np.random.default_rng(9).integers(1, 500, 5000)
    assert out == [_digest(pack(x, 512, s, seed=3)) for s in STRATEGIES]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_errors_name_the_offending_sample(strategy: str) -> None:
    with pytest.raises(ValueError, match=r"sample 2 has length 9 > capacity 8"):
        pack(np.array([1, 8, 9, 10]), 8, strategy)
    with pytest.raises(ValueError, match=r"sample 1 has length 0"):
        pack(np.array([3, 0, 2]), 8, strategy)
    with pytest.raises(ValueError, match=r"sample 0 has length -4"):
        pack(np.array([-4, 2]), 8, strategy)
    for capacity in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="capacity must be a positive integer"):
            pack(np.array([1, 2]), capacity, strategy)  # type: ignore[arg-type]


def test_other_errors() -> None:
    with pytest.raises(ValueError, match="bfd, ffd, first_fit_shuffle, next_fit") as e:
        pack(np.array([1, 2]), 8, "greedy")
    assert isinstance(e.value, UserError) and isinstance(e.value, PackingError)
    with pytest.raises(ValueError, match="1-D"):
        pack(np.ones((2, 2), dtype=int), 8)
    with pytest.raises(ValueError, match="integers"):
        pack(np.array([1.5, 2.0]), 8)
    with pytest.raises(ValueError, match="sample 1 has length 0"):
        concat_chunks(np.array([3, 0]), 8)
    with pytest.raises(ValueError, match="sample 0 has length 0"):
        split_overlong(np.array([0]), 8)
    with pytest.raises(ValueError, match="capacity"):
        concat_chunks(np.array([3]), 0)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_empty_input(strategy: str) -> None:
    assert pack(np.array([], dtype=np.int64), 8, strategy) == []
    assert pack([], 8, strategy) == []  # type: ignore[arg-type]
    stats = pack_stats(np.array([], dtype=np.int64), [], 8)
    assert (stats.n_samples, stats.n_packs, stats.total_tokens, stats.lower_bound) == (0, 0, 0, 0)
    assert stats.efficiency == 0.0


def test_pack_stats() -> None:
    rng = np.random.default_rng(10)
    for _ in range(100):
        lengths, capacity = random_case(rng)
        packs = pack(lengths, capacity)
        stats = pack_stats(lengths, packs, capacity)
        total = int(lengths.sum())
        assert stats.n_samples == len(lengths)
        assert stats.n_packs == len(packs)
        assert stats.total_tokens == total
        assert stats.efficiency == pytest.approx(total / (len(packs) * capacity))
        assert stats.lower_bound == -(-total // capacity) <= stats.n_packs
        assert 0 < stats.efficiency <= 1
    # A tight case: pairs that fill each pack exactly reach the lower bound.
    lengths = np.array([3, 5, 1, 7, 4, 4, 2, 6])
    stats = pack_stats(lengths, pack(lengths, 8), 8)
    assert stats.n_packs == stats.lower_bound == 4 and stats.efficiency == 1.0


def test_large_input_is_valid_and_near_lower_bound() -> None:
    rng = np.random.default_rng(11)
    lengths = np.clip(np.rint(rng.lognormal(6.04, 1.0, 200_000)), 1, 4096).astype(np.int64)
    for strategy in ("bfd", "ffd"):
        packs = pack(lengths, 4096, strategy)
        check_plan(lengths, 4096, packs)
        stats = pack_stats(lengths, packs, 4096)
        assert stats.n_packs <= stats.lower_bound * 1.001


def test_concat_chunks_covers_every_token_once() -> None:
    rng = np.random.default_rng(12)
    split_samples = 0
    for _ in range(200):
        capacity = int(rng.integers(1, 30))
        lengths = rng.integers(1, 2 * capacity + 2, int(rng.integers(1, 40)))
        seed = int(rng.integers(100))
        chunks = concat_chunks(lengths, capacity, seed=seed)
        assert chunks == concat_chunks(lengths, capacity, seed=seed)
        covered = [np.zeros(n, dtype=int) for n in lengths.tolist()]
        sizes = []
        for chunk in chunks:
            size = 0
            for i, start, end in chunk:
                assert 0 <= start < end <= lengths[i]
                covered[i][start:end] += 1
                size += end - start
            sizes.append(size)
        assert all(np.all(c == 1) for c in covered)
        assert all(s == capacity for s in sizes[:-1]) and 0 < sizes[-1] <= capacity
        assert len(chunks) == -(-int(lengths.sum()) // capacity)
        # Tokens are in sample order: consecutive fragments of one sample continue each other.
        flat = [f for chunk in chunks for f in chunk]
        assert sorted({f[0] for f in flat}) == list(range(len(lengths)))
        for a, b in itertools.pairwise(flat):
            if a[0] == b[0]:
                assert a[2] == b[1]
            else:
                assert a[2] == lengths[a[0]] and b[1] == 0
        split_samples += sum(len({f[0] for f in c}) > 1 for c in chunks)
    assert split_samples > 100


def test_concat_chunks_order_follows_seed() -> None:
    lengths = np.arange(1, 40)
    first = [c[0][0] for c in concat_chunks(lengths, 50, seed=0)]
    assert first != [c[0][0] for c in concat_chunks(lengths, 50, seed=1)]
    perm = np.random.default_rng(0).permutation(len(lengths)).tolist()
    flat = [f[0] for c in concat_chunks(lengths, 50, seed=0) for f in c]
    assert list(dict.fromkeys(flat)) == perm
    assert concat_chunks(np.array([], dtype=np.int64), 8) == []


def test_split_overlong() -> None:
    assert split_overlong(np.array([3, 8, 9, 20]), 8) == [
        (0, 0, 3),
        (1, 0, 8),
        (2, 0, 8),
        (2, 8, 9),
        (3, 0, 8),
        (3, 8, 16),
        (3, 16, 20),
    ]
    rng = np.random.default_rng(13)
    lengths = rng.integers(1, 100, 500)
    frags = split_overlong(lengths, 16)
    assert all(0 < end - start <= 16 for _, start, end in frags)
    total = np.zeros(len(lengths), dtype=int)
    for i, start, end in frags:
        total[i] += end - start
    assert np.array_equal(total, lengths)
    assert split_overlong(np.array([], dtype=np.int64), 8) == []


def test_bfd_is_fast_on_a_million_samples() -> None:
    # Guards the grouped algorithm: a per-sample Python loop takes > 10 s here.
    import time

    rng = np.random.default_rng(14)
    lengths = np.clip(np.rint(rng.lognormal(6.04, 1.0, 1_200_000)), 1, 4096).astype(np.int64)
    start = time.perf_counter()
    packs = pack(lengths, 4096, "bfd")
    elapsed = time.perf_counter() - start
    assert np.array_equal(np.sort(np.concatenate(packs)), np.arange(len(lengths)))
    assert elapsed < 5.0, f"bfd took {elapsed:.2f} s for 1.2 M samples (target 1 s)"
