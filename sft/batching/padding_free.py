"""`collator=padding_free`: padding's micro-batches, flattened into one row without pads.

    micro-batch A[a0 a1 a2], B[b0 b1 b2 b3]  ->  [a0 a1 a2 b0 b1 b2 b3], positions [0 1 2 0 1 2 3]

Same samples per step as padding (so the same optimizer steps and learning-rate schedule), no
pad computed; the samples of a row are isolated by varlen attention (cu_seq_lens).

Invariant: the plan is padding's plan for the same seed; each collated row equals the packing
collator's output for those samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sft.batching.base import Collate
from sft.batching.padding import Padding
from sft.data.plan import Row


@dataclass
class PaddingFreeConfig:
    """Padding's micro-batches without the pads: one flattened row per micro-batch."""

    name: str = "padding_free"
    """The option's name, as written in config.yaml (set by the option, not by the user)."""
    group_by_length: bool = False
    """Sort samples by length inside windows of 64 micro-batches (as padding does)."""

    def check(self, data, model) -> None:
        """Cross-field rules with the data config (none for padding_free)."""

    def build(self, max_length: int) -> PaddingFree:
        return PaddingFree(max_length, self.group_by_length)


class PaddingFree:
    def __init__(self, max_length: int, group_by_length: bool) -> None:
        self.capacity = max_length
        self._padding = Padding(max_length, 1, group_by_length)  # its rows are padding's rows

    def attention(self, requested: str, cuda: bool) -> str:
        from sft.models.build import resolve_attn_implementation

        return resolve_attn_implementation(requested, "varlen", cuda)

    def plan(self, pieces, targets, **sizes):
        return self._padding.plan(pieces, targets, **sizes)

    def eval_rows(self, pieces: np.ndarray, targets: np.ndarray) -> list[Row]:
        return self._padding.eval_rows(pieces, targets)

    def collator(self, pad_id: int, attn: str) -> Collate:
        from sft.data.collators import PaddingFreeCollator

        return PaddingFreeCollator(pad_id=pad_id)

    def describe(self) -> dict:
        return {
            "collator": "padding_free",
            "strategy": None,
            "capacity": self.capacity,
            "label": "padding_free",
        }

    def memory_rows(self, micro_batch_size: int, longest: int) -> tuple[int, int]:
        return micro_batch_size, longest  # at most padding's tokens, never more

    def oom_rows(self, micro_batch_size: int) -> tuple[str, str]:
        return f"{micro_batch_size} samples of up to {self.capacity} tokens", "data.max_length"
