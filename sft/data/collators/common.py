"""Bookkeeping shared by the collators: what they read, and the counts every training step logs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


class Tokens(Protocol):
    """The flat token arrays a collator reads (sft.data.dataset.TokenArrays)."""

    ids: np.ndarray  # token ids
    targets: np.ndarray  # shifted targets of every row (sft/data/targets.py)


@dataclass
class BatchMeta:
    """What a micro-batch holds, counted on the host before it reaches the device (no sync)."""

    samples: int  # distinct pieces (a random_concat fragment counts its piece once)
    tokens: int  # real (non-pad) input tokens
    pad_tokens: int  # positions computed that hold padding
    targets: int  # supervised target positions (targets that are not -100)
    piece_ids: list[int]  # piece index of every segment, for the seen-samples ledger

    @staticmethod
    def count_targets(targets: np.ndarray) -> int:
        return int((targets != -100).sum())
