"""`collator=padding`: one sample per row, right-padded to the longest sample of the micro-batch.

    micro-batch of 3 samples        rows                          attention: sdpa with a padding
      A [a0 a1 a2]                  [a0 a1 a2 P  P ]              mask (no sample shares a row)
      B [b0 b1 b2 b3 b4]            [b0 b1 b2 b3 b4]
      C [c0 c1]                     [c0 c1 P  P  P ]

Invariant: every training piece is in exactly one row of one step per epoch (the uneven tail of
several ranks aside, counted); a step holds micro_batch_size x grad_accum x world samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sft.batching.base import Collate
from sft.data.plan import EpochPlan, Row, plan_steps, sample_rows
from sft.errors import UserError


@dataclass
class PaddingConfig:
    """Pad every micro-batch of `train.micro_batch_size` samples to its longest sample."""

    name: str = "padding"
    """The option's name, as written in config.yaml (set by the option, not by the user)."""
    pad_to_multiple_of: int = 1
    """Round each micro-batch's row length up to a multiple of this (e.g. 8 for tensor cores)."""
    group_by_length: bool = False
    """Sort samples by length inside windows of 64 micro-batches to cut padding (less random)."""

    def __post_init__(self) -> None:
        if self.pad_to_multiple_of < 1:
            raise UserError("collator.pad_to_multiple_of must be >= 1")

    def check(self, data, model) -> None:
        """Cross-field rules with the data config (none for padding)."""

    def build(self, max_length: int) -> Padding:
        return Padding(max_length, self.pad_to_multiple_of, self.group_by_length)


class Padding:
    def __init__(self, max_length: int, pad_to_multiple_of: int, group_by_length: bool) -> None:
        self.capacity = max_length
        self.pad_to_multiple_of = pad_to_multiple_of
        self.group_by_length = group_by_length

    def attention(self, requested: str, cuda: bool) -> str:
        from sft.models.build import resolve_attn_implementation

        return resolve_attn_implementation(requested, "sdpa", cuda)

    def plan(self, pieces, targets, *, micro_batch_size, grad_accum, world_size, seed, epoch):
        rows = sample_rows(
            pieces,
            seed=seed,
            epoch=epoch,
            group_by_length=self.group_by_length,
            micro_batch_size=micro_batch_size,
        )
        return plan_steps(
            rows, micro_batch_size=micro_batch_size, grad_accum=grad_accum, world_size=world_size
        )

    def eval_rows(self, pieces: np.ndarray, targets: np.ndarray) -> list[Row]:
        return sample_rows(pieces, seed=0, epoch=0)

    def collator(self, pad_id: int, attn: str) -> Collate:
        from sft.data.collators import PaddingCollator

        return PaddingCollator(pad_id=pad_id, pad_to_multiple_of=self.pad_to_multiple_of)

    def describe(self) -> dict:
        return {
            "collator": "padding",
            "strategy": None,
            "capacity": self.capacity,
            "label": "padding",
        }

    def memory_rows(self, micro_batch_size: int, longest: int) -> tuple[int, int]:
        return micro_batch_size, longest

    def oom_rows(self, micro_batch_size: int) -> tuple[str, str]:
        return f"{micro_batch_size} samples of up to {self.capacity} tokens", "data.max_length"


__all__ = ["EpochPlan", "Padding", "PaddingConfig"]
