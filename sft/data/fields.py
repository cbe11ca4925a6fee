"""Which rows data options pick: a seeded sample of them, the held-out validation draw, and one
field's value per row (collator.group_by, data.combine_tag, data.eval_by).

Invariant: `sample_rows` keeps exactly min(n, len(rows)) rows, in file order, the same ones for
the same seed whatever else the config says; `held_out` draws the same indices for the same n,
fraction, cap and seed (data.val_seed, else the run's); `field_values` returns one value per row
and names the first training row that lacks the field instead of guessing.
"""

from __future__ import annotations

import numpy as np

from sft.errors import UserError


def sample_rows(rows: list[dict], n: int, seed: int) -> list[dict]:
    """A seeded random `n` of `rows` (all of them if fewer), kept in file order (data.sample)."""
    if n >= len(rows):
        return rows
    keep = np.sort(np.random.default_rng(seed).choice(len(rows), size=n, replace=False))
    return [rows[i] for i in keep]


def held_out(n: int, data, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(validation, training) indices of `n` rows, both sorted: a seeded data.val_fraction of
    them, at least one and at most data.val_max_samples (0: no cap), drawn from data.val_seed,
    or from the run's `seed` where that is -1."""
    seed = seed if data.val_seed < 0 else data.val_seed
    perm = np.random.default_rng(seed + 7919).permutation(n)
    n_val = min(max(1, round(data.val_fraction * n)), data.val_max_samples or n)
    return np.sort(perm[:n_val]), np.sort(perm[n_val:])


def field_values(rows: list[dict], field_name: str, n_train_rows: int, option: str) -> list:
    """The value of `field_name` in every row (None for validation rows that lack it); a
    training row without it is a one-line error naming the row and the `option` needing it."""
    values = []
    for i, row in enumerate(rows):
        if field_name in row and row[field_name] is not None:
            values.append(row[field_name])
        elif i < n_train_rows:
            keys = ", ".join(sorted(k for k in row if not k.startswith("_"))[:8])
            raise UserError(
                f"{row['_where']}: row has no field {field_name!r} for {option} "
                f"(its fields: {keys})"
            )
        else:
            values.append(None)
    return values
