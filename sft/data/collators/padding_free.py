"""Padding-free collator: the samples of a padding micro-batch, flattened into one row.

    micro-batch A[a0 a1 a2], B[b0 b1 b2 b3]  ->  input_ids [a0 a1 a2 b0 b1 b2 b3]
                                                 position_ids [0 1 2 0 1 2 3], cu_seq_lens [0 3 7]

Same samples per step as `padding` (so the same optimizer steps and learning-rate schedule), no
pad computed. It is the packing collator applied to one-sample rows.

Invariant: identical to PackingCollator(flatten=True) on the same rows.
"""

from __future__ import annotations

from sft.data.collators.packing import PackingCollator


class PaddingFreeCollator:
    def __init__(self, pad_id: int) -> None:
        self._flat = PackingCollator(pad_id=pad_id, flatten=True)

    def __call__(self, rows, tokens):
        return self._flat(rows, tokens)
