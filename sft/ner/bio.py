"""Conversion between tag sequences (BIO / IOB2, IOB1, IOBES) and word spans.

A span is `(start, end_inclusive, type)` over word indices.

Invariant: `tags_to_spans` finds exactly the chunks that conlleval (and seqeval's default mode)
finds: a chunk starts at B-/S-, or at I-/E- after O or after a chunk of another type; it ends
before O, B-, S-, a type change, and after E-/S-. For any set of non-overlapping spans,
`tags_to_spans(spans_to_tags(n, spans)) == sorted(spans)`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

Span = tuple[int, int, str]


def split_tag(tag: str) -> tuple[str, str]:
    """`"B-PER"` -> `("B", "PER")`; `"O"` -> `("O", "")`. Raises ValueError on anything else."""
    if tag == "O":
        return "O", ""
    prefix, sep, label = tag.partition("-")
    if sep != "-" or prefix not in ("B", "I", "E", "S") or not label:
        raise ValueError(f"bad tag {tag!r}: expected O or B-/I-/E-/S-<type>")
    return prefix, label


def tags_to_spans(tags: Sequence[str]) -> list[Span]:
    """Chunks of a tag sequence, conlleval-style (tolerates IOB1 and IOBES)."""
    spans: list[Span] = []
    start: int | None = None
    cur = ""
    prev_prefix = "O"
    for i, tag in enumerate(tags):
        prefix, label = split_tag(tag)
        # Does the open chunk end before token i?
        if start is not None and (
            prefix in ("O", "B", "S") or label != cur or prev_prefix in ("E", "S")
        ):
            spans.append((start, i - 1, cur))
            start = None
        # Does a chunk start at token i?
        if prefix != "O" and start is None:
            start, cur = i, label
        prev_prefix = prefix
    if start is not None:
        spans.append((start, len(tags) - 1, cur))
    return spans


def spans_to_tags(n_words: int, spans: Iterable[Span]) -> list[str]:
    """IOB2 tags for non-overlapping spans; raises ValueError on overlap or out-of-range spans."""
    tags = ["O"] * n_words
    for start, end, label in sorted(spans):
        if not 0 <= start <= end < n_words:
            raise ValueError(f"span {(start, end, label)} out of range for {n_words} words")
        if any(t != "O" for t in tags[start : end + 1]):
            raise ValueError(
                f"span {(start, end, label)} overlaps another span; BIO needs flat spans"
            )
        tags[start] = f"B-{label}"
        for i in range(start + 1, end + 1):
            tags[i] = f"I-{label}"
    return tags
