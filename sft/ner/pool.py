"""Seeded sentence subsets shared by every NER path: the low-resource training pool and the test
sample.

`pool_indices(n, size, seed)`: the N training sentences of a low-resource point (GPT-NER's paper,
"low-resource" setting). `sft-ner prompt --pool-size N --pool-seed S` draws its kNN demos from
them, and `sft-train data=ner_conll2003 data.builder_args.pool_size=N
data.builder_args.pool_seed=S` fine-tunes on them (`sft.ner.sft_data.build_conversations`).
`sample_indices(n, k, sample, seed)`: the sentences a run labels (`sft-ner prompt --n --seed`,
`sft-ner evaluate --n --seed`). `digest(sentences)` names a subset by its content in a run's
records, so runs of the two approaches can be checked to share a pool and a test sample
(`sft-ner table`).

Invariant: each function depends only on its arguments (the file's sentence count, the size,
the seed), never on the order of calls or on a global random state; the indices come back
sorted (the file's order); a pool of N is exactly N distinct sentences or a `UserError`, and
under one seed the pools are nested (the 8 sentences of N=8 are among the 32 of N=32).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence

from sft.errors import UserError
from sft.ner.readers import Sentence


def pool_indices(n_sentences: int, pool_size: int | None, seed: int = 0) -> list[int]:
    """Indices of a seeded `pool_size`-sentence subset of a file of `n_sentences` (None: all)."""
    if pool_size is None:
        return list(range(n_sentences))
    if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
        raise UserError(f"pool size {pool_size!r}: must be a positive number of sentences")
    if pool_size > n_sentences:
        raise UserError(
            f"pool size {pool_size} is more than the {n_sentences} sentences of the training file"
        )
    # A generator of its own: the same seed always gives the same order of the file's sentences,
    # whichever command asks, and a pool of N is the first N of it.
    order = list(range(n_sentences))
    random.Random(f"ner-pool:{seed}").shuffle(order)
    return sorted(order[:pool_size])


def sample_indices(n_sentences: int, n: int, sample: str = "random", seed: int = 0) -> list[int]:
    """The sentences a run labels: all (`n <= 0` or `n >= n_sentences`), the first `n`, or a
    seeded random `n`."""
    idx = list(range(n_sentences))
    if n <= 0 or n >= len(idx):
        return idx
    if sample == "first":
        return idx[:n]
    return sorted(random.Random(seed).sample(idx, n))


def digest(sentences: Sequence[Sentence]) -> str:
    """A short name of a list of sentences by their content (tokens and gold spans, in order), so
    a pool read from `spans/train.jsonl` and one read from `bio_2col/train.txt` compare equal
    exactly when they hold the same sentences."""
    rows = [[list(s.tokens), [list(e) for e in s.entities]] for s in sentences]
    blob = json.dumps(rows, ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]
