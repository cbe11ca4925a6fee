"""Collators turn a planned micro-batch (rows of segments) into model inputs plus bookkeeping.

Each batching choice (sft/batching/) picks its collator; every collator is called as
`collate(rows, tokens) -> (batch, BatchMeta)` and emits `input_ids`, `targets` (already shifted,
sft/data/targets.py), `seq_idx` and what its attention needs.
"""

from sft.data.collators.common import BatchMeta, Tokens
from sft.data.collators.leaky_packing import LeakyPackingCollator
from sft.data.collators.packing import PackingCollator
from sft.data.collators.padding import PaddingCollator
from sft.data.collators.padding_free import PaddingFreeCollator

__all__ = [
    "BatchMeta",
    "LeakyPackingCollator",
    "PackingCollator",
    "PaddingCollator",
    "PaddingFreeCollator",
    "Tokens",
]
