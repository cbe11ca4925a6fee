"""Padding collator: one sample per row, right-padded to the longest row of the micro-batch.

    samples  A = [a0 a1 a2]   B = [b0 b1 b2 b3 b4]
    input_ids       [[a0 a1 a2 P  P ]      attention_mask [[1 1 1 0 0]
                     [b0 b1 b2 b3 b4]]                     [1 1 1 1 1]]
    labels          [[-  a1 a2 -  - ]      (- = -100: pads and untrained tokens; the first token
                     [-  b1 -  b3 b4]]      of a row is never a target)

Invariant: row i holds exactly sample i's tokens followed by pads; every pad has attention 0 and
label -100; the row length is the longest sample rounded up to `pad_to_multiple_of`.
"""

from __future__ import annotations

import numpy as np
import torch

from sft.data.collators.common import BatchMeta


class PaddingCollator:
    def __init__(self, pad_id: int, pad_to_multiple_of: int = 1) -> None:
        self.pad_id = pad_id
        self.multiple = pad_to_multiple_of

    def __call__(
        self, rows: list[list[tuple[int, int, int]]], ids: np.ndarray, labels_of
    ) -> tuple[dict, BatchMeta]:
        lens = [sum(b - a for a, b, _ in row) for row in rows]
        width = -(-max(lens) // self.multiple) * self.multiple
        input_ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        labels = np.full((len(rows), width), -100, dtype=np.int64)
        attn = np.zeros((len(rows), width), dtype=np.int64)
        seq_idx = np.full((len(rows), width), -1, dtype=np.int64)
        piece_ids = []
        for r, row in enumerate(rows):
            ((a, b, piece),) = row  # one sample per row
            n = b - a
            input_ids[r, :n] = ids[a:b]
            labels[r, :n] = labels_of(a, b)
            labels[r, 0] = -100
            attn[r, :n] = 1
            seq_idx[r, :n] = r
            piece_ids.append(piece)
        tokens = int(sum(lens))
        meta = BatchMeta(
            samples=len(rows),
            tokens=tokens,
            pad_tokens=input_ids.size - tokens,
            targets=BatchMeta.count_targets(labels),
            piece_ids=piece_ids,
        )
        batch = {
            "input_ids": torch.from_numpy(input_ids),
            "labels": torch.from_numpy(labels),
            "attention_mask": torch.from_numpy(attn),
            "seq_idx": torch.from_numpy(seq_idx),
        }
        return batch, meta
