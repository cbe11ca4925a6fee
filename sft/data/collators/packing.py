"""Packing collator: the planned packs as rows whose samples can never see each other.

    pack = A[a0 a1 a2] + B[b0 b1] + C[c0 c1 c2]      (flatten=True: one row, no padding)
    input_ids     [a0 a1 a2 b0 b1 c0 c1 c2]
    position_ids  [0  1  2  0  1  0  1  2 ]           restart at 0 for every sample (RoPE)
    targets       [a1 a2 -  b1 -  c1 c2 - ]           last position of every sample -100
                                                      (sft/data/targets.py): no target
                                                      crosses a boundary
    seq_idx       [0  0  0  1  1  2  2  2 ]
    cu_seq_lens_q = cu_seq_lens_k = [0 3 5 8], max_length_q = max_length_k = 3

    attention (x = may attend)   a0 a1 a2 b0 b1 c0 c1 c2
                            a2 [ x  x  x  .  .  .  .  . ]
                            b1 [ .  .  .  x  x  .  .  . ]
                            c2 [ .  .  .  .  .  x  x  x ]

No `attention_mask` is ever emitted: transformers' sdpa/eager paths then build the block-diagonal
mask from the position-id restarts, and varlen/flash paths use cu_seq_lens. With flatten=False
(sdpa/eager, several packs per micro-batch) each pack is a row, padded to the longest pack; the
padding forms a segment of its own (positions restart, targets -100), so it is isolated too.
The leaky setup of the seed paper's code is a collator of its own (leaky_packing.py).

Invariant: every segment's tokens appear once, in order, with positions 0..len-1; cu_seq_lens
(over the flattened rows, padding segments included) sum to the number of positions.
"""

from __future__ import annotations

import numpy as np
import torch

from sft.data.collators.common import BatchMeta, Tokens
from sft.data.targets import segment_targets


class PackingCollator:
    def __init__(self, pad_id: int, flatten: bool = True, pad_to_multiple_of: int = 1) -> None:
        self.pad_id = pad_id
        self.flatten = flatten
        self.multiple = pad_to_multiple_of

    def __call__(
        self, rows: list[list[tuple[int, int, int]]], tokens: Tokens
    ) -> tuple[dict, BatchMeta]:
        if self.flatten:
            rows = [[seg for row in rows for seg in row]]
        row_lens = [sum(b - a for a, b, _ in row) for row in rows]
        width = max(row_lens)
        if not self.flatten:
            width = -(-width // self.multiple) * self.multiple
        n_rows = len(rows)
        input_ids = np.full((n_rows, width), self.pad_id, dtype=np.int64)
        targets = np.full((n_rows, width), -100, dtype=np.int64)
        position_ids = np.zeros((n_rows, width), dtype=np.int64)
        seq_idx = np.full((n_rows, width), -1, dtype=np.int64)
        seg_lens: list[int] = []
        piece_ids: list[int] = []
        s = 0
        for r, row in enumerate(rows):
            pos = 0
            for a, b, piece in row:
                n = b - a
                input_ids[r, pos : pos + n] = tokens.ids[a:b]
                segment_targets(tokens.targets, a, b, targets[r, pos : pos + n])
                position_ids[r, pos : pos + n] = np.arange(n)
                seq_idx[r, pos : pos + n] = s
                seg_lens.append(n)
                piece_ids.append(piece)
                s += 1
                pos += n
            if pos < width:  # padding segment of its own
                position_ids[r, pos:] = np.arange(width - pos)
                seg_lens.append(width - pos)
        real = int(sum(row_lens))
        meta = BatchMeta(
            samples=len(set(piece_ids)),
            tokens=real,
            pad_tokens=input_ids.size - real,
            targets=BatchMeta.count_targets(targets),
            piece_ids=piece_ids,
        )
        cu = np.zeros(len(seg_lens) + 1, dtype=np.int32)
        np.cumsum(seg_lens, out=cu[1:])
        cu_t = torch.from_numpy(cu)
        max_len = int(max(seg_lens))
        batch = {
            "input_ids": torch.from_numpy(input_ids),
            "targets": torch.from_numpy(targets),
            "position_ids": torch.from_numpy(position_ids),
            "seq_idx": torch.from_numpy(seq_idx),
            "cu_seq_lens_q": cu_t,
            "cu_seq_lens_k": cu_t,
            "max_length_q": max_len,
            "max_length_k": max_len,
        }
        return batch, meta
