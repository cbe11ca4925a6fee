"""Padding collator: one sample per row, right-padded to the longest row of the micro-batch.

    samples  A = [a0 a1 a2]   B = [b0 b1 b2 b3 b4]
    input_ids       [[a0 a1 a2 P  P ]      attention_mask [[1 1 1 0 0]
                     [b0 b1 b2 b3 b4]]                     [1 1 1 1 1]]
    targets         [[a1 a2 -  -  - ]      (- = -100: pads, untrained tokens and the last
                     [b1 -  b3 b4 - ]]      position of a sample; sft/data/targets.py)

Invariant: row i holds exactly sample i's tokens followed by pads; every pad has attention 0 and
target -100; the row length is the longest sample rounded up to `pad_to_multiple_of`.
"""

from __future__ import annotations

import numpy as np
import torch

from sft.data.collators.common import BatchMeta, Tokens
from sft.data.targets import segment_targets


class PaddingCollator:
    def __init__(self, pad_id: int, pad_to_multiple_of: int = 1) -> None:
        self.pad_id = pad_id
        self.multiple = pad_to_multiple_of

    def __call__(
        self, rows: list[list[tuple[int, int, int]]], tokens: Tokens
    ) -> tuple[dict, BatchMeta]:
        lens = [sum(b - a for a, b, _ in row) for row in rows]
        width = -(-max(lens) // self.multiple) * self.multiple
        input_ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        targets = np.full((len(rows), width), -100, dtype=np.int64)
        attn = np.zeros((len(rows), width), dtype=np.int64)
        seq_idx = np.full((len(rows), width), -1, dtype=np.int64)
        piece_ids = []
        for r, row in enumerate(rows):
            ((a, b, piece),) = row  # one sample per row
            n = b - a
            input_ids[r, :n] = tokens.ids[a:b]
            segment_targets(tokens.targets, a, b, targets[r, :n])
            attn[r, :n] = 1
            seq_idx[r, :n] = r
            piece_ids.append(piece)
        real = int(sum(lens))
        meta = BatchMeta(
            samples=len(rows),
            tokens=real,
            pad_tokens=input_ids.size - real,
            targets=BatchMeta.count_targets(targets),
            piece_ids=piece_ids,
        )
        batch = {
            "input_ids": torch.from_numpy(input_ids),
            "targets": torch.from_numpy(targets),
            "attention_mask": torch.from_numpy(attn),
            "seq_idx": torch.from_numpy(seq_idx),
        }
        return batch, meta
