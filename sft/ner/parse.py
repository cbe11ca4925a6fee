"""Parse a generated `@@entity##` sentence back into word spans of the source sentence.

How: the answer line is split into characters and markers (`@@` opens, `##` closes, `##LABEL`
closes with a type in typed mode); markers pair up like brackets, so nested entities work and a
marker without a partner is counted and ignored. The generated characters, whitespace removed
and lowercased, are aligned to the source characters with difflib (longest common blocks first,
so repeated words align by position and changed whitespace or case costs nothing). Short
accidental blocks (under 3 characters, unless a whole word matches a whole word) are discarded.
An entity becomes the source words holding its aligned characters, snapped outwards to word edges.

Invariant: returned spans always index words of the source (`0 <= start <= end < len(tokens)`),
sorted and unique. Nothing generated is trusted without alignment: an entity with fewer than half
of its characters aligned is dropped as hallucinated, and every drop is counted in `ParseStats`.
Parsing `mark(tokens, spans)` (or `mark_typed`) returns exactly those spans with zero counts.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

from sft.ner.bio import Span

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


def answer_line(text: str) -> str:
    """The line of `text` holding the labeled sentence: the first with a marker, else the first
    non-empty one; a leading 'The labeled sentence:' is removed."""
    lines = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.lower().startswith("the labeled sentence:"):
            line = line[len("the labeled sentence:") :].strip()
        if line:
            lines.append(line)
    for line in lines:
        if "@@" in line:
            return line
    return lines[0] if lines else ""


@dataclass
class _Lexed:
    chars: list[str]  # lowercased non-space characters
    word_of: list[int]  # index of the word (text between spaces or markers) of each character
    events: list[tuple[str, int, str | None]]  # ("open"|"close", pos, label)


def _lex(line: str, labels: list[str] | None) -> _Lexed:
    chars: list[str] = []
    word_of: list[int] = []
    events: list[tuple[str, int, str | None]] = []
    word = 0
    # Longest labels first so "cell_line" wins over a hypothetical "cell".
    by_len = sorted(labels or [], key=len, reverse=True)
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if c.isspace():
            word += 1
            i += 1
            continue
        if c in "@#":
            j = i
            while j < n and line[j] == c:
                j += 1
            run = j - i
            # Markers also separate words: "@@EU##rejects" holds the words EU and rejects.
            if c == "@":  # opens first, then an odd '@' belongs to the word (e.g. "@user")
                word += run >= 2
                events += [("open", len(chars), None)] * (run // 2)
                if run % 2:
                    chars.append("@")
                    word_of.append(word)
            else:  # an odd '#' belongs to the word (e.g. "C#"), then the closes
                if run % 2:
                    chars.append("#")
                    word_of.append(word)
                closes = run // 2
                word += closes > 0
                label = None
                if closes and labels is not None:
                    label, j = _match_label(line, j, by_len)
                for k in range(closes):
                    events.append(("close", len(chars), label if k == closes - 1 else None))
            i = j
            continue
        chars.append(c.lower())
        word_of.append(word)
        i += 1
    return _Lexed(chars, word_of, events)


def _match_label(line: str, j: int, labels_by_len: list[str]) -> tuple[str | None, int]:
    low = line.lower()
    for lab in labels_by_len:
        end = j + len(lab)
        if low.startswith(lab.lower(), j) and (end == len(line) or not line[end].isalnum()):
            return lab, end
    return None, j


def _align(
    gen: list[str], word_of: list[int], tokens: Sequence[str]
) -> tuple[list[int], list[int]]:
    """gen char -> source char index (-1 when unaligned), and source char -> token index."""
    src_chars: list[str] = []
    tok_of: list[int] = []
    for t, tok in enumerate(tokens):
        for ch in tok.lower():
            if not ch.isspace():
                src_chars.append(ch)
                tok_of.append(t)
    g2s = [-1] * len(gen)
    matcher = difflib.SequenceMatcher(None, gen, src_chars, autojunk=False)
    for a, b, size in matcher.get_matching_blocks():
        if size == 0:
            continue
        if size < MIN_BLOCK and not _whole_words(a, b, size, word_of, tok_of):
            continue
        for k in range(size):
            g2s[a + k] = b + k
    return g2s, tok_of


def _whole_words(a: int, b: int, size: int, word_of: list[int], tok_of: list[int]) -> bool:
    def edges(ids: list[int], start: int) -> bool:
        end = start + size - 1
        left = start == 0 or ids[start - 1] != ids[start]
        right = end == len(ids) - 1 or ids[end + 1] != ids[end]
        return left and right

    return edges(word_of, a) and edges(tok_of, b)


def _parse(
    text: str, tokens: Sequence[str], labels: list[str] | None, label: str | None
) -> tuple[list[Span], ParseStats]:
    stats = ParseStats()
    lexed = _lex(answer_line(text), labels)
    g2s, tok_of = _align(lexed.chars, lexed.word_of, tokens)

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
        src = [g2s[p] for p in range(a, b) if g2s[p] >= 0]
        if b <= a or 2 * len(src) < b - a:
            stats.hallucinated_entities += 1
            continue
        out_label = label if labels is None else lab
        if out_label is None:
            stats.untyped += 1
            continue
        lo, hi = min(src), max(src)
        start, end = tok_of[lo], tok_of[hi]
        if (lo > 0 and tok_of[lo - 1] == start) or (hi + 1 < len(tok_of) and tok_of[hi + 1] == end):
            stats.snapped += 1
        spans.add((start, end, out_label))
    stats.kept = len(spans)
    return sorted(spans), stats
