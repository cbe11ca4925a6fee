"""Parse a generated `@@entity##` sentence back into word spans of the source sentence.

How: the answer line (of several, the one covering most of the sentence) is split into
characters and markers (`@@` opens, `##` closes; in typed mode `##LABEL`, `##(LABEL)` or
`## LABEL` closes with a type); markers pair up like brackets, so nested entities work and a
marker without a partner is counted and ignored. The generated characters, whitespace removed
and lowercased, are aligned to the source characters with difflib (longest common blocks first,
so repeated words align by position and changed whitespace or case costs nothing). Every block is
cut at the marker positions inside it, and short accidental pieces (under 3 characters, unless a
whole word matches a whole word) are discarded, so no match runs from outside an entity into it.
An entity whose characters spell exactly a run of source words is those words (the run holding
its aligned characters); otherwise it becomes the source words holding its aligned characters,
snapped outwards to word edges, a boundary word reached only from its far side left out.

Invariant: returned spans always index words of the source (`0 <= start <= end < len(tokens)`),
sorted and unique. Nothing generated is trusted without the source backing it: an entity with
fewer than half of its characters aligned is dropped as hallucinated unless it spells a source
word run (the only one, or the only one between its aligned neighbours), and every drop is
counted in `ParseStats`. Parsing `mark(tokens, spans)` (or `mark_typed`) returns exactly those
spans with zero counts; dropping or inserting words outside the entities, changing case,
detokenising, or adding a prefix, suffix or note never yields a span that is not marked
(tests/ner/test_parse_perturbation.py).
"""

from __future__ import annotations

import bisect
import difflib
import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

from sft.ner.bio import Span
from sft.ner.marks import Lexed as _Lexed
from sft.ner.marks import lex as _lex

MIN_BLOCK = 3


@dataclass
class ParseStats:
    marked: int = 0  # entities marked in the output (marker pairs)
    kept: int = 0  # spans returned
    hallucinated_entities: int = 0  # dropped: under half of their characters are in the sentence
    hallucinated_words: int = 0  # output words with under half of their characters aligned
    unbalanced_markers: int = 0  # an @@ never closed or a ## never opened
    snapped: int = 0  # entity boundary fell inside a word and was moved to the word edge
    untyped: int = 0  # typed mode: entity closed without a known label (dropped)
    trimmed: int = 0  # a boundary word reached from its far side, mostly unaligned, left out

    def __add__(self, other: ParseStats) -> ParseStats:
        return ParseStats(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        )

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def parse_marked(text: str, tokens: Sequence[str], label: str) -> tuple[list[Span], ParseStats]:
    """Spans `(start, end, label)` marked `@@...##` in the generated `text`."""
    return _parse(text, tokens, None, label)


def parse_typed(
    text: str, tokens: Sequence[str], labels: Sequence[str]
) -> tuple[list[Span], ParseStats]:
    """Spans marked `@@...##LABEL` in `text`, LABEL one of `labels` (matched case-insensitively)."""
    return _parse(text, tokens, list(labels), None)


def answer_line(text: str, tokens: Sequence[str] | None = None) -> str:
    """The line of `text` holding the labeled sentence, a leading 'The labeled sentence:' removed.

    Given the source `tokens`, that is the line covering most of the sentence (a marked line
    first on a tie, then the earliest), so a trailing 'Note: @@X## ...' cannot win over the
    rewritten sentence; lines echoing 'The given sentence:' count only when nothing else is there.
    Without tokens: the first line with a marker, else the first non-empty one."""
    lines = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.lower().startswith("the labeled sentence:"):
            line = line[len("the labeled sentence:") :].strip()
        if line:
            lines.append(line)
    if tokens is not None and len(lines) > 1:
        own = [x for x in lines if not x.lower().startswith("the given sentence:")] or lines
        src = [c for c in "".join(tokens).lower() if not c.isspace()]
        return max(own, key=lambda x: (_coverage(x, src), "@@" in x))
    for line in lines:
        if "@@" in line:
            return line
    return lines[0] if lines else ""


def _coverage(line: str, src: list[str]) -> int:
    """How many source characters `line` (markers ignored) matches in blocks of MIN_BLOCK+."""
    gen = [c for c in line.lower().replace("@@", "").replace("##", "") if not c.isspace()]
    matcher = difflib.SequenceMatcher(None, gen, src, autojunk=False)
    return sum(size for _, _, size in matcher.get_matching_blocks() if size >= MIN_BLOCK)


@dataclass
class _Source:
    text: str  # lowercased non-space characters of the source words, concatenated
    tok_of: list[int]  # word index of each character
    offsets: list[int]  # offsets[t]: index of word t's first character; offsets[-1] == len(text)


def _source(tokens: Sequence[str]) -> _Source:
    chars: list[str] = []
    tok_of: list[int] = []
    offsets: list[int] = []
    for t, tok in enumerate(tokens):
        offsets.append(len(chars))
        for ch in tok.lower():
            if not ch.isspace():
                chars.append(ch)
                tok_of.append(t)
    offsets.append(len(chars))
    return _Source("".join(chars), tok_of, offsets)


def _align(lexed: _Lexed, src: _Source) -> list[int]:
    """gen char -> source char index (-1 when unaligned).

    A matching block is cut at every marker position inside it and each piece must stand on its
    own (MIN_BLOCK characters, or a whole word matching a whole word): a match running across a
    marker would otherwise carry an entity's edge into the neighbouring source word. A hole left
    between aligned characters is aligned again inside its own window of the source, where a
    2-character piece is trusted if it begins (or ends) a word on both sides and occurs once in
    the window: "@@Itqly##" between "(" and ")" keeps "it" and "ly"."""
    gen = lexed.chars
    cuts = sorted({pos for _, pos, _ in lexed.events})
    g2s = [-1] * len(gen)
    matcher = difflib.SequenceMatcher(None, gen, list(src.text), autojunk=False)
    _take(matcher.get_matching_blocks(), 0, None, cuts, lexed, src, g2s)
    i = 0
    while i < len(gen):
        if g2s[i] >= 0:
            i += 1
            continue
        j = i
        while j < len(gen) and g2s[j] < 0:
            j += 1
        left = g2s[i - 1] + 1 if i else 0
        right = g2s[j] if j < len(gen) else len(src.text)
        if 0 < right - left <= 2 * (j - i) + 4:
            sub = difflib.SequenceMatcher(None, gen[i:j], list(src.text[left:right]), False)
            _take(sub.get_matching_blocks(), i, (left, right), cuts, lexed, src, g2s)
        i = j
    return g2s


def _take(
    blocks: list[difflib.Match],
    ga: int,
    window: tuple[int, int] | None,
    cuts: list[int],
    lexed: _Lexed,
    src: _Source,
    g2s: list[int],
) -> None:
    """Record matching `blocks` (gen offset `ga`, source offset the window's start), cut at the
    marker positions `cuts`, each piece checked on its own."""
    sa = window[0] if window else 0
    for a, b, size in blocks:
        if size == 0:
            continue
        a, b = a + ga, b + sa
        edges = [a, *cuts[bisect.bisect_right(cuts, a) : bisect.bisect_left(cuts, a + size)]]
        edges.append(a + size)
        for lo, hi in itertools.pairwise(edges):
            n, off = hi - lo, b + lo - a
            if n < MIN_BLOCK and not _whole_words(lo, off, n, lexed.word_of, src.tok_of):
                short_ok = (
                    window is not None
                    and n == MIN_BLOCK - 1
                    and _shared_edge(lo, off, n, lexed.word_of, src.tok_of)
                    and src.text.count(src.text[off : off + n], *window) == 1
                )
                if not short_ok:
                    continue
            for k in range(n):
                g2s[lo + k] = off + k


def _shared_edge(a: int, b: int, size: int, word_of: list[int], tok_of: list[int]) -> bool:
    """The piece starts a word on both sides or ends a word on both sides ("ly" of "Itqly")."""

    def starts(ids: list[int], i: int) -> bool:
        return i == 0 or ids[i - 1] != ids[i]

    def ends(ids: list[int], i: int) -> bool:
        return i == len(ids) - 1 or ids[i + 1] != ids[i]

    last = size - 1
    return (starts(word_of, a) and starts(tok_of, b)) or (
        ends(word_of, a + last) and ends(tok_of, b + last)
    )


def _whole_words(a: int, b: int, size: int, word_of: list[int], tok_of: list[int]) -> bool:
    def edges(ids: list[int], start: int) -> bool:
        end = start + size - 1
        left = start == 0 or ids[start - 1] != ids[start]
        right = end == len(ids) - 1 or ids[end + 1] != ids[end]
        return left and right

    return edges(word_of, a) and edges(tok_of, b)


def _exact(a: int, b: int, ent: str, g2s: list[int], src: _Source) -> tuple[int, int] | None:
    """The source words spelling exactly `ent` (the entity's generated characters `a:b`) that
    the alignment points at: the candidate holding most of its aligned characters; when none of
    them is aligned (an inserted copy of the word took the alignment), the only candidate between
    the aligned neighbours, else the only one in the sentence. None when no words spell `ent`."""
    off = src.offsets
    starts = {off[t]: t for t in range(len(off) - 1) if off[t + 1] > off[t]}  # words with chars
    ends = set(src.offsets)
    cands: list[tuple[int, int]] = []
    pos = src.text.find(ent)
    while pos >= 0:
        if pos in starts and pos + len(ent) in ends:
            cands.append((starts[pos], src.tok_of[pos + len(ent) - 1]))
        pos = src.text.find(ent, pos + 1)
    if not cands:
        return None
    aligned = [p for p in g2s[a:b] if p >= 0]

    def held(c: tuple[int, int]) -> int:
        lo, hi = src.offsets[c[0]], src.offsets[c[1] + 1]
        return sum(lo <= p < hi for p in aligned)

    best = max(cands, key=held)
    if held(best) > 0:
        return best
    if 2 * len(aligned) >= b - a:
        return None  # aligned elsewhere: not these words (e.g. "@@Japan##ese"), let it be fuzzy
    left = max((p + 1 for p in g2s[:a] if p >= 0), default=0)
    right = min((p for p in g2s[b:] if p >= 0), default=len(src.text))
    between = [c for c in cands if left <= src.offsets[c[0]] and src.offsets[c[1] + 1] <= right]
    if len(between) == 1:
        return between[0]
    return cands[0] if len(cands) == 1 else None


def _fuzzy(aligned: list[int], src: _Source) -> tuple[int, int, bool, bool]:
    """(start, end, snapped, trimmed): the words holding the aligned characters, where a word at
    either end must be reached from its near edge or be mostly aligned ("@@Austraqian## John"
    with "ian" aligned into the end of a dropped "parliamentarian" does not take it); a word that
    is not is left out (trimmed), the one with the smaller aligned share first when both fail."""
    held = set(aligned)
    lo, hi = min(aligned), max(aligned)
    start, end = src.tok_of[lo], src.tok_of[hi]
    trimmed = False
    off = src.offsets

    def share(t: int) -> float:
        return sum(off[t] <= p < off[t + 1] for p in aligned) / (off[t + 1] - off[t])

    while start < end:
        start_ok = off[start + 1] - 1 in held or share(start) >= 0.5
        end_ok = off[end] in held or share(end) >= 0.5
        if start_ok and end_ok:
            break
        trimmed = True
        if start_ok or (not end_ok and share(end) < share(start)):
            hi = max(p for p in aligned if p < off[end])
            end = src.tok_of[hi]
        else:
            lo = min(p for p in aligned if off[start + 1] <= p <= hi)
            start = src.tok_of[lo]
    snapped = (lo > 0 and src.tok_of[lo - 1] == start) or (
        hi + 1 < len(src.tok_of) and src.tok_of[hi + 1] == end
    )
    return start, end, snapped, trimmed


def _parse(
    text: str, tokens: Sequence[str], labels: list[str] | None, label: str | None
) -> tuple[list[Span], ParseStats]:
    stats = ParseStats()
    lexed = _lex(answer_line(text, tokens), labels)
    src = _source(tokens)
    g2s = _align(lexed, src)

    per_word: dict[int, list[bool]] = {}
    for w, s in zip(lexed.word_of, g2s):
        per_word.setdefault(w, []).append(s >= 0)
    stats.hallucinated_words = sum(2 * sum(v) < len(v) for v in per_word.values())

    stack: list[int] = []
    entities: list[tuple[int, int, str | None]] = []
    for kind, pos, lab in lexed.events:
        if kind == "open":
            stack.append(pos)
        elif stack:
            entities.append((stack.pop(), pos, lab))
        else:
            stats.unbalanced_markers += 1
    stats.unbalanced_markers += len(stack)
    stats.marked = len(entities)

    spans: set[Span] = set()
    for a, b, lab in entities:
        found = _exact(a, b, "".join(lexed.chars[a:b]), g2s, src) if b > a else None
        aligned = [g2s[p] for p in range(a, b) if g2s[p] >= 0]
        if found is None and (b <= a or 2 * len(aligned) < b - a):
            stats.hallucinated_entities += 1
            continue
        out_label = label if labels is None else lab
        if out_label is None:
            stats.untyped += 1
            continue
        if found is None:
            start, end, snapped, trimmed = _fuzzy(aligned, src)
            stats.snapped += snapped
            stats.trimmed += trimmed
        else:
            start, end = found
        spans.add((start, end, out_label))
    stats.kept = len(spans)
    return sorted(spans), stats
