"""Bookkeeping shared by the collators: the counts every training step logs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class BatchMeta:
    """What a micro-batch holds, counted on the host before it reaches the device (no sync)."""

    samples: int  # distinct pieces (a random_concat fragment counts its piece once)
    tokens: int  # real (non-pad) input tokens
    pad_tokens: int  # positions computed that hold padding
    targets: int  # supervised target tokens (labels after the shift that are not -100)
    piece_ids: list[int]  # piece index of every segment, for the seen-samples ledger

    @staticmethod
    def count_targets(labels: np.ndarray) -> int:
        return int((labels[..., 1:] != -100).sum())
