"""Lexing of a generated line with `@@entity##` marks: characters, word numbers and markers.

`lex(line, labels)`: the line's non-space characters (lowercased), the word each belongs to, and
the open/close events at character positions. `@@` opens and `##` closes; an odd `@` or `#`
belongs to its word ("@user", "C#"); markers also separate words. In typed mode (`labels` given)
a close carries the label that follows it: glued (`##ORG`, any case), bracketed after optional
spaces (`##(ORG)`, `## [org]`), or a bare word after spaces spelled exactly as the label
(`## ORG`; `## per` stays a word of the sentence).

Invariant: `len(chars) == len(word_of)`, event positions are within `0..len(chars)`, and every
character of the line that is not whitespace or part of a marker (or of a label read as one) is
in `chars`, in order.
"""

from __future__ import annotations

from dataclasses import dataclass

_BRACKETS = {"(": ")", "[": "]", "<": ">"}


@dataclass
class Lexed:
    chars: list[str]  # lowercased non-space characters
    word_of: list[int]  # index of the word (text between spaces or markers) of each character
    events: list[tuple[str, int, str | None]]  # ("open"|"close", pos, label)


def lex(line: str, labels: list[str] | None) -> Lexed:
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
    return Lexed(chars, word_of, events)


def _match_label(line: str, j: int, labels_by_len: list[str]) -> tuple[str | None, int]:
    """The label closing an entity at `line[j:]` and the index after it: glued (`##ORG`, any
    case), bracketed after optional spaces (`##(ORG)`, `## [org]`), or a bare word after spaces
    spelled exactly as the label (`## ORG`; `## per` stays a word of the sentence)."""
    lab, end = _label_at(line, j, labels_by_len, exact=False)
    if lab is not None:
        return lab, end
    k = j
    while k < len(line) and line[k] in " \t":
        k += 1
    if k < len(line) and line[k] in _BRACKETS:
        lab, end = _label_at(line, k + 1, labels_by_len, exact=False)
        if lab is not None and line.startswith(_BRACKETS[line[k]], end):
            return lab, end + 1
    if k > j:
        lab, end = _label_at(line, k, labels_by_len, exact=True)
        if lab is not None:
            return lab, end
    return None, j


def _label_at(line: str, j: int, labels_by_len: list[str], exact: bool) -> tuple[str | None, int]:
    text = line if exact else line.lower()
    for lab in labels_by_len:
        end = j + len(lab)
        if text.startswith(lab if exact else lab.lower(), j) and (
            end == len(line) or not line[end].isalnum()
        ):
            return lab, end
    return None, j
