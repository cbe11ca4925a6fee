"""The validation loss: token mean over every validation piece, whatever the batching choice;
with `data.eval_by`, also the token mean of each value's pieces (`grouped_validation_loss`).

Invariant: the value is the same under padding, packing and padding_free for the same
validation pieces (each piece is in exactly one row; see Batching.eval_rows), on any number of
ranks (every rank runs the same number of forwards, so ZeRO-3's gathers line up). Split by
value, each piece is evaluated once, in its value's rows, and the overall loss is the
target-weighted mean of the values' losses: the number the unsplit evaluation gives.
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


def grouped_validation_loss(model, pieces, groups, names, eval_rows, collate, tokens, **kw):
    """(token-mean loss, targets, {value: its token-mean loss}) over validation `pieces`;
    `groups` holds each piece's index into `names` (None: no split, an empty dict);
    `eval_rows(pieces)` makes the rows of a set of pieces (Batching.eval_rows)."""
    if groups is None:
        return (*validation_loss(model, eval_rows(pieces), collate, tokens, **kw), {})
    total, count, by = 0.0, 0, {}
    for g, name in enumerate(names):
        value, n = validation_loss(model, eval_rows(pieces[groups == g]), collate, tokens, **kw)
        by[name] = value
        total, count = total + value * n, count + n
    return total / max(count, 1), count, by
