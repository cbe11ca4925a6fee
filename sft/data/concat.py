"""Cutting samples into fragments: the seed paper's random packing, and overlong samples.

`concat_chunks(lengths, capacity, seed)` shuffles, concatenates and cuts every `capacity`
tokens (samples split across chunks, nothing dropped); `split_overlong(lengths, capacity)` cuts
each sample longer than `capacity` into consecutive fragments (`data.overlong=split`).

Invariant (both): every token of every sample lies in exactly one fragment, fragments of a
sample are consecutive and in order, and the same input and seed give the same fragments.
"""

from __future__ import annotations

import numpy as np

from sft.data.packing import _as_lengths, _check_capacity, _check_range


def concat_chunks(
    lengths: np.ndarray, capacity: int, seed: int = 0, order: np.ndarray | None = None
) -> list[list[tuple[int, int, int]]]:
    """Shuffle samples with `seed`, concatenate them and cut every `capacity` tokens.

    The order is `np.random.default_rng(seed).permutation(len(lengths))`, or `order` (a
    permutation of the sample indices) when given.
    Returns, per chunk, its fragments `(sample_index, start, end)` (token offsets inside the
    sample, end exclusive) in concatenation order. Every token of every sample lies in exactly
    one fragment; all chunks hold exactly `capacity` tokens except possibly the last (the tail
    is kept). Samples longer than `capacity` are allowed.
    """
    capacity = _check_capacity(capacity)
    lengths = _as_lengths(lengths)
    if lengths.size == 0:
        return []
    _check_range(lengths, None)
    if order is None:
        perm = np.random.default_rng(seed).permutation(lengths.size)
    else:
        perm = np.asarray(order, dtype=np.int64)
    lens = lengths[perm]
    ends = np.cumsum(lens)
    starts = ends - lens
    first = starts // capacity
    n_frag = (ends - 1) // capacity - first + 1
    owner = np.repeat(np.arange(lens.size), n_frag)  # position in the shuffled order
    frag_first = np.cumsum(n_frag) - n_frag
    chunk = first[owner] + (np.arange(owner.size) - frag_first[owner])
    g_start = np.maximum(starts[owner], chunk * capacity)
    g_end = np.minimum(ends[owner], (chunk + 1) * capacity)
    frags = list(
        zip(
            perm[owner].tolist(),
            (g_start - starts[owner]).tolist(),
            (g_end - starts[owner]).tolist(),
        )
    )
    cuts = (np.flatnonzero(np.diff(chunk)) + 1).tolist()
    return [frags[a:b] for a, b in zip([0, *cuts], [*cuts, len(frags)])]


def split_overlong(lengths: np.ndarray, capacity: int) -> list[tuple[int, int, int]]:
    """Cut each sample into consecutive fragments `(sample_index, start, end)` of <= capacity.

    A sample of length <= capacity gives the single fragment `(i, 0, length)`; a longer one gives
    `ceil(length / capacity)` fragments, all of exactly `capacity` tokens except the last.
    Fragments are ordered by sample, then by start.
    """
    capacity = _check_capacity(capacity)
    lengths = _as_lengths(lengths)
    if lengths.size == 0:
        return []
    _check_range(lengths, None)
    n_frag = -(-lengths // capacity)
    owner = np.repeat(np.arange(lengths.size), n_frag)
    k = np.arange(owner.size) - (np.cumsum(n_frag) - n_frag)[owner]
    start = k * capacity
    end = np.minimum(start + capacity, lengths[owner])
    return list(zip(owner.tolist(), start.tolist(), end.tolist()))
