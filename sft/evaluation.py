"""The validation loss: token mean over every validation piece, whatever the batching choice.

Invariant: the value is the same under padding, packing and padding_free for the same
validation pieces (each piece is in exactly one row; see Batching.eval_rows), on any number of
ranks (every rank runs the same number of forwards, so ZeRO-3's gathers line up).
"""

from __future__ import annotations

import functools

import torch

from sft.engine import Engine
from sft.loss import micro_batch_loss


@torch.no_grad()
def validation_loss(
    model, rows, collate, tokens, *, micro_batch_size: int, engine: Engine, loss=None
):
    """(token-mean loss, target tokens) over `rows`, split into micro-batches over the ranks."""
    acc = engine.accelerator
    mb_rows = [rows[i : i + micro_batch_size] for i in range(0, len(rows), micro_batch_size)]
    mine = mb_rows[engine.rank :: engine.world]
    n_max = -(-len(mb_rows) // engine.world)
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=acc.device)
    count = 0
    for j in range(n_max):  # a rank with no micro-batch left repeats one and discards it
        batch, meta = collate(mine[j] if j < len(mine) else mb_rows[0], tokens)
        batch = {k: v.to(acc.device) if torch.is_tensor(v) else v for k, v in batch.items()}
        with acc.autocast():
            s, _ = (loss or functools.partial(micro_batch_loss, normalization="token"))(
                model, batch
            )
        if j < len(mine):
            loss_sum += s.double()
            count += meta.targets
    model.train()
    total, n = engine.all_reduce([float(loss_sum), count])
    return total / max(n, 1), int(n)
