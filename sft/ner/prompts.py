"""GPT-NER prompts: entity extraction as rewriting the sentence with `@@entity##` markers.

Per type (the GPT-NER shape): a task description naming the type and what it covers, k
demonstrations "The given sentence: ...\\nThe labeled sentence: ..." whose entities of that type
are wrapped as `@@entity##`, then the query sentence with an empty "The labeled sentence:".
All types at once (for fine-tuning): each entity wrapped as `@@entity##LABEL`.
Self-verification asks 'Is the word "X" in the given sentence a(n) TYPE entity? Please answer
with yes or no.', zero-shot or after demonstrations answered yes/no.

Invariant: `mark` and `mark_typed` keep every word, in order, separated by single spaces: removing
the markers gives back `" ".join(tokens)`; nested spans give nested markers (outer opens first,
inner closes first), so `sft.ner.parse` recovers the exact spans.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sft.ner.entity_types import EntityType
from sft.ner.readers import Sentence

OPEN, CLOSE = "@@", "##"
GIVEN, LABELED = "The given sentence:", "The labeled sentence:"


def mark(tokens: Sequence[str], spans: Iterable[tuple]) -> str:
    """Sentence with each span `(start, end[, type])` wrapped as `@@words##`."""
    return _mark(tokens, [(s[0], s[1], "") for s in spans])


def mark_typed(tokens: Sequence[str], entities: Iterable[tuple[int, int, str]]) -> str:
    """Sentence with each entity wrapped as `@@words##LABEL`."""
    return _mark(tokens, list(entities))


def _mark(tokens: Sequence[str], spans: list[tuple[int, int, str]]) -> str:
    uniq = sorted(set(spans))
    opens = [0] * len(tokens)
    closes: list[list[tuple[int, str]]] = [[] for _ in tokens]
    for s, e, label in uniq:
        if not 0 <= s <= e < len(tokens):
            raise ValueError(f"span {(s, e)} out of range for {len(tokens)} tokens")
        opens[s] += 1
        closes[e].append((s, label))
    words = []
    for i, tok in enumerate(tokens):
        # Inner spans (later start) close first.
        tail = "".join(CLOSE + label for _, label in sorted(closes[i], key=lambda c: -c[0]))
        words.append(OPEN * opens[i] + tok + tail)
    return " ".join(words)


def task_description(etype: EntityType, with_demos: bool) -> str:
    text = (
        f"You are an expert in named entity recognition. The task is to label {etype.name} "
        f"entities in the given sentence. {etype.description}\n"
        f"Rewrite the sentence word for word and wrap every {etype.name} entity as @@entity##. "
        "Leave all other words unchanged; if there is no such entity, rewrite the sentence as it is."
    )
    if with_demos:
        text += "\nBelow are some examples."
    return text


def ner_prompt(tokens: Sequence[str], etype: EntityType, demos: Sequence[Sentence] = ()) -> str:
    """Prompt asking for the `etype` entities of `tokens`, after `demos` labeled for `etype`."""
    parts = [task_description(etype, bool(demos))]
    for d in demos:
        spans = [e for e in d.entities if e[2] == etype.label]
        parts.append(f"{GIVEN} {' '.join(d.tokens)}\n{LABELED} {mark(d.tokens, spans)}")
    parts.append(f"{GIVEN} {' '.join(tokens)}\n{LABELED}")
    return "\n\n".join(parts)


def all_types_description(types: Sequence[EntityType], with_demos: bool) -> str:
    lines = [
        (
            "You are an expert in named entity recognition. The task is to label the entities "
            "of these types in the given sentence:"
        )
    ]
    lines += [f"- {t.label} ({t.name}): {t.description}" for t in types]
    labels = ", ".join(t.label for t in types)
    lines.append(
        "Rewrite the sentence word for word and wrap every entity as @@entity##TYPE, "
        f"where TYPE is one of {labels}. Leave all other words unchanged."
    )
    if with_demos:
        lines.append("Below are some examples.")
    return "\n".join(lines)


def all_types_prompt(
    tokens: Sequence[str], types: Sequence[EntityType], demos: Sequence[Sentence] = ()
) -> str:
    """Prompt asking for the entities of all `types` at once, marked `@@entity##LABEL`."""
    labels = {t.label for t in types}
    parts = [all_types_description(types, bool(demos))]
    for d in demos:
        ents = [e for e in d.entities if e[2] in labels]
        parts.append(f"{GIVEN} {' '.join(d.tokens)}\n{LABELED} {mark_typed(d.tokens, ents)}")
    parts.append(f"{GIVEN} {' '.join(tokens)}\n{LABELED}")
    return "\n\n".join(parts)


@dataclass(frozen=True)
class VerifyDemo:
    """A solved verification example: is `word` in `tokens` an entity of the type? -> answer."""

    tokens: tuple[str, ...]
    word: str
    answer: bool


def verify_question(word: str, etype: EntityType) -> str:
    return (
        f'Is the word "{word}" in the given sentence {etype.article} {etype.name} entity? '
        "Please answer with yes or no."
    )


def verify_prompt(
    tokens: Sequence[str], word: str, etype: EntityType, demos: Sequence[VerifyDemo] = ()
) -> str:
    """Self-verification prompt for one extracted entity `word` of type `etype`."""
    head = (
        f"The task is to verify whether a word or phrase from the given sentence is "
        f"{etype.article} {etype.name} entity. {etype.description}"
    )
    if demos:
        head += "\nBelow are some examples."
    parts = [head]
    for d in demos:
        answer = "yes" if d.answer else "no"
        parts.append(f"{GIVEN} {' '.join(d.tokens)}\n{verify_question(d.word, etype)}\n{answer}")
    parts.append(f"{GIVEN} {' '.join(tokens)}\n{verify_question(word, etype)}")
    return "\n\n".join(parts)


def verify_demos(demos: Sequence[Sentence], etype: EntityType, k: int) -> list[VerifyDemo]:
    """Up to `k` verification demos from labeled sentences, alternating yes (entities of `etype`)
    and no (entities of other types, the usual confusions), most relevant demo sentences last."""
    yes = [
        VerifyDemo(tuple(d.tokens), " ".join(d.tokens[s : e + 1]), True)
        for d in demos
        for s, e, t in d.entities
        if t == etype.label
    ]
    no = [
        VerifyDemo(tuple(d.tokens), " ".join(d.tokens[s : e + 1]), False)
        for d in demos
        for s, e, t in d.entities
        if t != etype.label
    ]
    out: list[VerifyDemo] = []
    # Take from the end of each list: demos arrive ordered least to most similar.
    while len(out) < k and (yes or no):
        for pool in (yes, no):
            if pool and len(out) < k:
                out.append(pool.pop())
    out.reverse()
    return out


def parse_yes_no(text: str) -> bool | None:
    """True for an answer starting with yes, False for no, None when unclear."""
    words = text.strip().lower().lstrip("\"'*").split()
    if not words:
        return None
    first = words[0].strip(".,!:;\"'*")
    if first == "yes":
        return True
    if first == "no":
        return False
    return None
