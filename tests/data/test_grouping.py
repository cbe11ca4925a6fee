"""What is packed with what (sft/data/grouping.py): together packs are single-valued, apart
packs mix, and no sample is lost, duplicated or overflows a pack, for every strategy."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from sft.data.concat import concat_chunks
from sft.data.grouping import (
    GroupMode,
    concat_grouped,
    group_ids,
    group_stats,
    pack_grouped,
)
from sft.data.packing import STRATEGIES, pack, pack_stats

CAPACITY = 2048


def _data(n: int = 20_000, n_groups: int = 5, seed: int = 0, skew: bool = False):
    rng = np.random.default_rng(seed)
    lengths = np.clip(np.rint(rng.lognormal(5.5, 0.9, n)), 1, CAPACITY).astype(np.int64)
    p = np.arange(n_groups, 0, -1, dtype=float) ** 2 if skew else np.ones(n_groups)
    groups = rng.choice(n_groups, n, p=p / p.sum())
    return lengths, groups


def _check_plan(packs, lengths):
    placed = np.concatenate(packs)
    assert np.array_equal(np.sort(placed), np.arange(lengths.size)), "a sample lost or duplicated"
    assert max(int(lengths[p].sum()) for p in packs) <= CAPACITY


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_together_packs_hold_one_value_each(strategy):
    lengths, groups = _data(5_000)
    packs = pack_grouped(lengths, groups, CAPACITY, strategy, GroupMode.together, seed=3)
    _check_plan(packs, lengths)
    assert all(len(set(groups[p].tolist())) == 1 for p in packs)
    stats = group_stats(packs, groups)
    assert stats.mixed == 0 and stats.groups_per_pack == 1.0
    plain = pack(lengths, CAPACITY, strategy, seed=3)
    if strategy in ("bfd", "ffd"):  # each group ends with at most one extra, partly filled pack
        assert len(plain) <= len(packs) <= len(plain) + 5
    else:  # order-driven strategies: about as many packs
        assert abs(len(packs) - len(plain)) <= 0.02 * len(plain)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("skew", [False, True])
def test_apart_mixes_nearly_every_pack_at_the_ungrouped_efficiency(strategy, skew):
    lengths, groups = _data(skew=skew)
    packs = pack_grouped(lengths, groups, CAPACITY, strategy, GroupMode.apart, seed=3)
    _check_plan(packs, lengths)
    plain = pack(lengths, CAPACITY, strategy, seed=3)
    assert len(packs) == len(plain)  # same packs and tokens: same efficiency and steps
    assert pack_stats(lengths, packs, CAPACITY) == pack_stats(lengths, plain, CAPACITY)
    mixed, ungrouped = group_stats(packs, groups), group_stats(plain, groups)
    assert mixed.multi == ungrouped.multi > 1000
    # quantified: of the packs of several samples, >= 99% hold more than one value with 5 even
    # groups, >= 97% with 5 skewed ones (25:16:9:4:1, the largest 45% of the samples); and
    # more distinct values per pack than chance gives
    assert mixed.mixed_fraction >= (0.97 if skew else 0.99), (mixed, ungrouped)
    assert mixed.mixed_fraction >= ungrouped.mixed_fraction
    assert mixed.groups_per_pack > ungrouped.groups_per_pack


def test_apart_with_two_groups_still_mixes_almost_every_pack():
    lengths, groups = _data(n_groups=2)
    packs = pack_grouped(lengths, groups, CAPACITY, "bfd", GroupMode.apart)
    _check_plan(packs, lengths)
    assert group_stats(packs, groups).mixed_fraction >= 0.95  # chance: about 0.85


def test_one_group_is_the_ungrouped_plan():
    lengths, _ = _data(3_000)
    one = np.zeros(lengths.size, dtype=np.int64)
    plain = pack(lengths, CAPACITY, "bfd")
    for mode in GroupMode.values():
        packs = pack_grouped(lengths, one, CAPACITY, "bfd", mode)
        assert [p.tolist() for p in packs] == [p.tolist() for p in plain]


def test_grouped_plans_are_deterministic():
    lengths, groups = _data(4_000)
    for mode in GroupMode.values():
        a = pack_grouped(lengths, groups, CAPACITY, "first_fit_shuffle", mode, seed=7)
        b = pack_grouped(lengths, groups, CAPACITY, "first_fit_shuffle", mode, seed=7)
        assert [p.tolist() for p in a] == [p.tolist() for p in b]


def _chunk_tokens(chunks, n):
    seen = [[] for _ in range(n)]
    for chunk in chunks:
        for i, s, e in chunk:
            seen[i].append((s, e))
    return seen


@pytest.mark.parametrize("mode", GroupMode.values())
def test_random_concat_takes_the_option(mode):
    lengths, groups = _data(4_000)
    chunks = concat_grouped(lengths, groups, CAPACITY, mode, seed=5)
    # every token of every sample in exactly one fragment, fragments in order
    for i, frags in enumerate(_chunk_tokens(chunks, lengths.size)):
        frags.sort()
        assert frags[0][0] == 0 and frags[-1][1] == lengths[i]
        assert all(a[1] == b[0] for a, b in itertools.pairwise(frags))
    assert all(sum(e - s for _, s, e in c) <= CAPACITY for c in chunks)
    packs = [np.array(sorted({i for i, _, _ in c})) for c in chunks]
    stats = group_stats(packs, groups)
    if mode == GroupMode.together:
        assert stats.mixed == 0
    else:
        plain = concat_chunks(lengths, CAPACITY, seed=5)
        shuffled = group_stats([np.array(sorted({i for i, _, _ in c})) for c in plain], groups)
        assert stats.mixed_fraction >= 0.99 and stats.mixed_fraction >= shuffled.mixed_fraction


def test_group_stats_counts_mixed_multi_sample_packs():
    groups = np.array([0, 0, 1, 2, 2])
    stats = group_stats([np.array([0, 1]), np.array([2, 3]), np.array([4])], groups)
    assert (stats.packs, stats.multi, stats.mixed) == (3, 2, 1)
    assert stats.mixed_fraction == 0.5 and stats.groups_per_pack == pytest.approx(4 / 3)


def test_group_ids_in_order_of_first_appearance():
    ids, names = group_ids(["gsm8k", "aqua", "gsm8k", 3, "3"])
    assert ids.tolist() == [0, 1, 0, 2, 2] and names == ["gsm8k", "aqua", "3"]


def test_bad_groups_are_refused():
    with pytest.raises(ValueError, match="one per sample"):
        pack_grouped(np.array([3, 4]), np.array([0]), 8, "bfd", "together")
    with pytest.raises(ValueError, match="unknown group mode"):
        pack_grouped(np.array([3, 4]), np.array([0, 1]), 8, "bfd", "sideways")
