"""Leaky packing collator: the seed paper's packed rows, where samples DO attend to each other.

    pack = A[a0 a1] + B[b0 b1 b2]
    input_ids       [a0 a1 b0 b1 b2]
    attention_mask  [1  1  1  1  1 ]      all ones, no position ids: positions run 0..4, so
    targets         [a1 -  b1 b2 - ]      b0..b2 see a0 a1 (causal over the whole row)

Kept only to measure what the leak costs (`collator=leaky_packing`); targets stay per sample, as
in the isolated collator, so the two differ in attention and positions only.

Invariant: the same rows, tokens and targets as PackingCollator; an all-ones attention mask and
no position ids or cu_seq_lens.
"""

from __future__ import annotations

import torch

from sft.data.collators.common import BatchMeta, Tokens
from sft.data.collators.packing import PackingCollator

LEAKY_KEYS = ("input_ids", "targets", "seq_idx")


class LeakyPackingCollator:
    def __init__(self, pad_id: int, flatten: bool = True, pad_to_multiple_of: int = 1) -> None:
        self._packed = PackingCollator(
            pad_id=pad_id, flatten=flatten, pad_to_multiple_of=pad_to_multiple_of
        )

    def __call__(self, rows, tokens: Tokens) -> tuple[dict, BatchMeta]:
        packed, meta = self._packed(rows, tokens)
        batch = {k: packed[k] for k in LEAKY_KEYS}
        batch["attention_mask"] = torch.ones_like(packed["input_ids"])
        return batch, meta
