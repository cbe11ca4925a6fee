"""Perturbed gold outputs must never parse to a wrong span.

A model rewriting a sentence with `@@entity##` marks drops a word, inserts one, changes case,
detokenises ("U.S ." -> "U.S.", "do n't" -> "don't") or wraps the answer in a prefix or a note.
None of this touches the marked entities, so the parser must return only gold spans (a wrong span
is a predicted span not in gold, label included) and should keep almost every gold entity. A
typo inside an entity (no source words spell it any more) exercises the fuzzy alignment: it may
lose the entity but must not move its boundaries either.

The outputs are built from an embedded set of sentences (always run) and from CoNLL-2003 test
sentences in ../shared/data (skipped when absent). `NER_PERTURB_SENTENCES=N` sets how many CoNLL
sentences (default 300; 0 = all); run with `-s` to see the counts.
"""

from __future__ import annotations

import os
import random
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence

from sft.ner.parse import parse_marked, parse_typed
from sft.ner.readers import Sentence, read_spans_jsonl

from .conftest import data_file

LABELS = ["PER", "ORG", "LOC", "MISC"]

EMBEDDED = [
    Sentence(["Canadian", "grain", "statistics", "weekly", "."], [(0, 0, "MISC")]),
    Sentence(
        ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."],
        [(0, 0, "ORG"), (2, 2, "MISC"), (6, 6, "MISC")],
    ),
    Sentence(
        ["He", "visited", "the", "U.S", ".", "and", "did", "n't", "stay", "."],
        [(3, 3, "LOC")],
    ),
    Sentence(
        ["Peter", "Blackburn", "said", "Blackburn", "'s", "team", "won", "."],
        [(0, 1, "PER"), (3, 3, "ORG")],
    ),
    Sentence(
        ["the", "cat", "saw", "the", "New", "York", "cat", "near", "New", "York", "."],
        [(4, 5, "LOC"), (8, 9, "LOC")],
    ),
    Sentence(
        ["(", "Reuters", ")", "-", "Shares", "in", "Acme", "Corp", "rose", "3", "%", "."],
        [(1, 1, "ORG"), (6, 7, "ORG")],
    ),
    Sentence(
        ["Japan", "'s", "Nikkei", "fell", ",", "Japan", "said", "."],
        [(0, 0, "LOC"), (2, 2, "MISC"), (5, 5, "LOC")],
    ),
    Sentence(["a", "A", "an", "Anna", "and", "Ann", "."], [(3, 3, "PER"), (5, 5, "PER")]),
    Sentence(["West", "Indies", "v", "West", "Indies", "A"], [(0, 1, "LOC"), (3, 5, "ORG")]),
    Sentence(["1.", "Ajax", "10", "8", "2", "0", "23", "5", "26"], [(1, 1, "ORG")]),
]

INSERTS = ["the", "a", "said", ",", "very", "of", "and", "."]
ATTACH_LEFT = re.compile(r"^(n't|'\w*|[.,;:!?%)\]}]+|'')$", re.IGNORECASE)
ATTACH_RIGHT = {"(", "[", "{", "$", "``"}
PREFIXES = [
    "Output: ",
    "The labeled sentence: ",
    "Sure! Here is the labeled sentence:\n",
    "Answer:\n\n",
    '"',
]
SUFFIXES = [
    " (end)",
    '"',
    "\nNote: I wrapped every entity.",
    " Hope this helps!",
    "\n\nThe given sentence: Peter went home .",
]


def words_of(sent: Sentence, ents: Sequence[tuple[int, int, str]], typed: bool) -> list[str]:
    """The output words of the gold answer, markers attached (as `prompts.mark` writes them)."""
    out = list(sent.tokens)
    for s, e, lab in sorted(ents, key=lambda x: (x[0], -x[1])):
        out[s] = "@@" + out[s]
    for s, e, lab in sorted(ents, key=lambda x: -x[0]):
        out[e] = out[e] + "##" + (lab if typed else "")
    return out


def inside(ents: Sequence[tuple[int, int, str]], n: int) -> list[bool]:
    flags = [False] * n
    for s, e, _ in ents:
        for i in range(s, e + 1):
            flags[i] = True
    return flags


def detokenise(words: list[str], tokens: Sequence[str]) -> str:
    """Join punctuation and clitics to their neighbours the way running text writes them."""
    out = ""
    glue_next = False
    for i, (w, tok) in enumerate(zip(words, tokens)):
        if i and (glue_next or ATTACH_LEFT.match(tok)):
            out += w
        else:
            out += (" " if i else "") + w
        glue_next = tok in ATTACH_RIGHT
    return out


def perturbations(
    sent: Sentence, ents: list[tuple[int, int, str]], typed: bool, rng: random.Random
) -> Iterator[tuple[str, str]]:
    """(kind, output) pairs: every single-word drop and a sample of the other perturbations."""
    words = words_of(sent, ents, typed)
    n = len(words)
    flags = inside(ents, n)
    text = " ".join(words)
    for i in range(n):
        if not flags[i] and n > 1:
            yield "drop", " ".join(words[:i] + words[i + 1 :])
    # Insertion points are the gaps not inside an entity.
    gaps = [i for i in range(n + 1) if not any(s < i <= e for s, e, _ in ents)]
    for i in rng.sample(gaps, min(3, len(gaps))):
        extra = rng.choice(INSERTS + [sent.tokens[rng.randrange(n)]])
        yield "insert", " ".join(words[:i] + [extra] + words[i:])
    yield "case", text.lower()
    yield "case", text.upper()
    j = rng.randrange(n)
    yield "case", " ".join(w.capitalize() if k == j else w for k, w in enumerate(words))
    yield "detok", detokenise(words, sent.tokens)
    yield "prefix", rng.choice(PREFIXES) + text
    yield "suffix", text + rng.choice(SUFFIXES)
    if ents:
        s, e, lab = ents[0]
        mention = " ".join(sent.tokens[s : e + 1])
        note = f"@@{mention}##{lab if typed else ''}"
        yield "suffix", f"{text}\nNote: {note} is an entity."
    long = [(s, e) for s, e, _ in ents if len(sent.tokens[s]) >= 5]
    if long:
        # A typo inside an entity: no words spell it any more, so the fuzzy alignment decides.
        s, e = rng.choice(long)
        typo = list(words)
        k = typo[s].index(sent.tokens[s]) + rng.randrange(1, len(sent.tokens[s]) - 1)
        typo[s] = typo[s][:k] + ("q" if typo[s][k] != "q" else "z") + typo[s][k + 1 :]
        yield "typo", " ".join(typo)
        if free := [i for i in range(n) if not flags[i]]:
            i = rng.choice(free)
            yield "typo+drop", " ".join(typo[:i] + typo[i + 1 :])
    free = [i for i in range(n) if not flags[i]]
    if free and n > 1:
        i = rng.choice(free)
        dropped = words[:i] + words[i + 1 :]
        yield "drop+detok", detokenise(dropped, sent.tokens[:i] + sent.tokens[i + 1 :]).lower()


def measure(sentences: Sequence[Sentence], seed: int = 0) -> dict[str, Counter]:
    """Counts per perturbation kind: outputs, wrong spans, and lost gold entities."""
    rng = random.Random(seed)
    counts: dict[str, Counter] = {}
    examples: list[str] = []

    def check(kind: str, parse: Callable[[str], list], text: str, gold: set) -> None:
        got = set(parse(text))
        c = counts.setdefault(kind, Counter())
        c["outputs"] += 1
        c["gold"] += len(gold)
        wrong = got - gold
        c["wrong"] += len(wrong)
        c["lost"] += len(gold - got)
        if wrong and len(examples) < 20:
            examples.append(f"{kind}: {text!r} -> wrong {sorted(wrong)}")

    for sent in sentences:
        gold = set(sent.entities)
        for kind, text in perturbations(sent, list(sent.entities), True, rng):
            check(
                "typed/" + kind,
                lambda t, s=sent: parse_typed(t, s.tokens, LABELS)[0],
                text,
                gold,
            )
        for lab in LABELS:
            ents = [x for x in sent.entities if x[2] == lab]
            if not ents and rng.random() < 0.75:
                continue  # a sample of the outputs with nothing to mark
            for kind, text in perturbations(sent, ents, False, rng):
                check(
                    "per_type/" + kind,
                    lambda t, s=sent, lab=lab: parse_marked(t, s.tokens, lab)[0],
                    text,
                    set(ents),
                )
    counts["_examples"] = Counter({e: 1 for e in examples})
    return counts


def report(name: str, counts: dict[str, Counter]) -> tuple[Counter, Counter]:
    """Print the counts; return the totals over perturbations that leave the entity text intact
    and over those that change it (typos)."""
    intact, typo = Counter(), Counter()
    lines = []
    for kind in sorted(k for k in counts if not k.startswith("_")):
        c = counts[kind]
        (typo if "typo" in kind else intact).update(c)
        lines.append(
            f"  {kind:22s} outputs={c['outputs']:6d} wrong={c['wrong']:4d} "
            f"lost={c['lost']:4d}/{c['gold']}"
        )
    for what, t in (("entity text intact", intact), ("entity typo", typo)):
        print(
            f"\n{name}, {what}: outputs={t['outputs']} wrong spans={t['wrong']} "
            f"lost gold entities={t['lost']}/{t['gold']}",
            end="",
        )
    print("\n" + "\n".join(lines))
    for ex in counts["_examples"]:
        print("  e.g.", ex)
    return intact, typo


def check_counts(counts: dict[str, Counter], intact: Counter, typo: Counter) -> None:
    kinds = {k.split("/")[1] for k in counts if "/" in k}
    assert kinds == {"drop", "insert", "case", "detok", "prefix", "suffix", "drop+detok"} | {
        "typo",
        "typo+drop",
    }
    assert all(counts[k]["outputs"] > 0 for k in counts if "/" in k)
    assert intact["wrong"] == 0 and typo["wrong"] == 0
    # With the entity text intact every gold entity should come back.
    assert intact["lost"] <= intact["gold"] // 1000
    # A typo may cost the entity (too little of it aligns) but never moves its boundaries.
    assert typo["lost"] <= typo["gold"] // 20


def test_embedded_perturbations_never_give_a_wrong_span():
    counts = measure(EMBEDDED)
    intact, typo = report("embedded", counts)
    assert intact["outputs"] > 300
    check_counts(counts, intact, typo)


def test_conll_test_perturbations_never_give_a_wrong_span():
    sentences = read_spans_jsonl(data_file("conll2003", "spans", "test.jsonl"))
    n = int(os.environ.get("NER_PERTURB_SENTENCES", "300"))
    if n:
        sentences = random.Random(0).sample(sentences, min(n, len(sentences)))
    counts = measure(sentences)
    intact, typo = report(f"conll2003 test, {len(sentences)} sentences", counts)
    check_counts(counts, intact, typo)
