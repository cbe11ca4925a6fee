"""Micro precision / recall / F1 on exact spans, overall and per type, flat or nested alike.

A predicted span counts as correct only when `(start, end, type)` equals a gold span of the same
sentence. Spans are sets per sentence (a duplicate counts once), so nested and overlapping spans
need no special case. P = tp/(tp+fp), R = tp/(tp+fn) (0 when the denominator is 0) and
F1 = 2PR/(P+R) (0 when P+R == 0).

Invariant: on flat spans the numbers equal seqeval's (default, conlleval-compatible mode) for
the same spans written as IOB2 tags; totals are sums of the per-type counts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sft.ner.bio import Span


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "support": self.tp + self.fn,
        }


def score_spans(gold: Sequence[Iterable[Span]], pred: Sequence[Iterable[Span]]) -> dict:
    """`{"precision", "recall", "f1", "tp", "fp", "fn", "support", "per_type": {T: {...}}}`."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted")
    per_type: dict[str, Counts] = {}
    for g_spans, p_spans in zip(gold, pred):
        g, p = set(map(tuple, g_spans)), set(map(tuple, p_spans))
        for span in g | p:
            c = per_type.setdefault(span[2], Counts())
            if span in g and span in p:
                c.tp += 1
            elif span in p:
                c.fp += 1
            else:
                c.fn += 1
    total = Counts(
        sum(c.tp for c in per_type.values()),
        sum(c.fp for c in per_type.values()),
        sum(c.fn for c in per_type.values()),
    )
    out = total.as_dict()
    out["per_type"] = {t: per_type[t].as_dict() for t in sorted(per_type)}
    return out
