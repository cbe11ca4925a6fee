"""What every batching choice provides to the trainer, `sft-data` and `sft-plan`.

Invariant: for the same samples in an optimizer step, every batching choice that isolates its
samples gives the same token-normalised loss and update (tests/test_loss_equivalence.py); the
choices differ only in how rows are formed and what attention they need.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from sft.data.plan import EpochPlan, Row

if TYPE_CHECKING:
    from sft.data.collators import BatchMeta, Tokens

Collate = Callable[[list[Row], "Tokens"], tuple[dict[str, Any], "BatchMeta"]]
# attention backends that take one flattened row with cu_seq_lens (several samples per row)
FLAT_ATTENTION = ("varlen", "flash_attention_2", "flash_attention_3")


class Batching(Protocol):
    capacity: int  # the most tokens one row can hold

    def attention(self, requested: str, cuda: bool) -> str:
        """The attention backend for `model.attn_implementation=requested`."""
        ...

    def plan(
        self,
        pieces: np.ndarray,
        targets: np.ndarray,
        *,
        micro_batch_size: int,
        grad_accum: int,
        world_size: int,
        seed: int,
        epoch: int,
    ) -> EpochPlan:
        """The rows, micro-batches, ranks and steps of one training epoch."""
        ...

    def eval_rows(self, pieces: np.ndarray, targets: np.ndarray) -> list[Row]:
        """Every validation piece exactly once, in a fixed order (no fragments)."""
        ...

    def collator(self, pad_id: int, attn: str) -> Collate:
        """The collator that turns planned rows into model inputs for backend `attn`."""
        ...

    def describe(self) -> dict:
        """{"collator", "strategy", "capacity", "label"} for summaries, reports and checkpoints."""
        ...

    def memory_rows(self, micro_batch_size: int, longest: int) -> tuple[int, int]:
        """(rows, tokens per row) of the largest micro-batch, for the memory plan."""
        ...

    def oom_rows(self, micro_batch_size: int) -> tuple[str, str]:
        """(what a micro-batch holds, the config key that sets its row length), for OOM advice."""
        ...
