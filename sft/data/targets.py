"""Targets, made once: position t of a segment is trained to predict token t + 1 of that segment.

    tokens of a row  a0 a1 a2 a3 a4     trained mask (answer tokens)  0 0 1 1 1
    row targets      -  a2 a3 a4 -      (- = -100) targets[t] = tokens[t + 1] where trained
    segment (a1..a4) -  a3 a4 -         a segment's last position predicts nothing

`row_targets` builds the shifted targets of every row when the tokens are made (dataset.py);
collators copy `segment_targets` into each row, so no code shifts labels again and the loss
reads targets as they are. The one rule lives in `segment_targets`: a segment (a piece, a
truncated or split piece, a random_concat fragment) never trains its last position, which is
the same as "the first token of a segment is never a target" (it has no context) and means no
target crosses a segment boundary.

Invariant: a segment's targets equal the row targets on [a, b - 1) and -100 at b - 1.
"""

from __future__ import annotations

import numpy as np

IGNORE = -100


def row_targets(ids: np.ndarray, trained: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """int32 targets over the flat arrays of all rows (row r is offsets[r]:offsets[r + 1])."""
    targets = np.full(len(ids), IGNORE, dtype=np.int32)
    if len(ids) > 1:
        targets[:-1] = np.where(trained[1:], ids[1:], IGNORE)
    ends = offsets[1:] - 1
    targets[ends[ends >= 0]] = IGNORE  # the last token of a row predicts nothing
    return targets


def segment_targets(targets: np.ndarray, a: int, b: int, out: np.ndarray) -> None:
    """Write the targets of segment a:b into `out` (b - a positions; the last one -100), in place:
    the collators call it once per segment of every micro-batch, so it allocates nothing."""
    out[: b - a - 1] = targets[a : b - 1]
    out[b - a - 1] = IGNORE


def count_targets(targets: np.ndarray, a: int, b: int) -> int:
    """How many targets segment a:b trains."""
    return int((targets[a : b - 1] != IGNORE).sum())


def has_target(targets: np.ndarray, a: int, b: int) -> bool:
    """Whether segment a:b trains anything (a segment without a target is never planned)."""
    return bool((targets[a : b - 1] != IGNORE).any())


def trained_tokens(targets: np.ndarray, a: int, b: int) -> np.ndarray:
    """bool per token of segment a:b: is it some position's target (the first token never is)."""
    out = np.zeros(b - a, dtype=bool)
    out[1:] = targets[a : b - 1] != IGNORE
    return out
