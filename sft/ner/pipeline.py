"""GPT-NER end to end: retrieve demos, prompt per type, generate, parse, self-verify, collect.

Per sentence, k demonstrations are retrieved once (most similar placed last, next to the query)
and shared by all types. Mode `per_type` asks one prompt per (sentence, type) with `@@entity##`
markers (GPT-NER); mode `all_types` asks one prompt per sentence with `@@entity##LABEL` markers
(the format `sft.ner.sft_data` trains). With `verify`, every extracted entity of every type
(PER included) gets the yes/no self-verification prompt, with up to `verify_k` demos made from
the same retrieved sentences (source `extraction`) or retrieved per entity by `verify_source`
(source `entity`, kNN over the training set's words: `sft.ner.verify_demos`), and is dropped on a
"no" (kept when the answer is unclear, counted). `verify_k > 0` with nothing to draw demos from
is a `UserError`, never a silent zero-shot.
Sentences are labeled in chunks of similar length: a chunk's prompts for every type, then its
verification; each sentence is handed to `on_sentence` as soon as its chunk is done, so a caller
can write it out before the rest of the run (and resume from there).

Invariant: `predictions[i]` holds only spans inside sentence i, with labels among `types`;
the stats count every dropped or rejected entity: parse.kept (unique spans after parsing) =
predicted + verify_rejected.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields

from sft.errors import UserError
from sft.ner.backends import Backend
from sft.ner.bio import Span
from sft.ner.entity_types import EntityType
from sft.ner.parse import ParseStats, parse_marked, parse_typed
from sft.ner.prompts import (
    GIVEN,
    all_types_prompt,
    ner_prompt,
    parse_yes_no,
    verify_demos,
    verify_prompt,
)
from sft.ner.readers import Sentence
from sft.ner.retrieval import Retriever
from sft.ner.verify_demos import VerifyDemoSource

MODES = ("per_type", "all_types")
STOP = ("\n" + GIVEN,)


@dataclass
class NERStats:
    prompts: int = 0
    parse: ParseStats = field(default_factory=ParseStats)
    verify_asked: int = 0
    verify_rejected: int = 0
    verify_unclear: int = 0
    predicted: int = 0

    def __add__(self, other: NERStats) -> NERStats:
        return NERStats(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        )

    def as_dict(self) -> dict:
        d = asdict(self)
        d["parse"] = self.parse.as_dict()
        return d


@dataclass
class NERResult:
    predictions: list[list[Span]]
    stats: NERStats
    raw: list[dict]  # per sentence: {"generated": {label or "all": text}, "verify": [...]}
    unverified: list[list[Span]] | None = None  # with verify: the predictions before it


@dataclass
class SentenceOutcome:
    """One finished sentence: what `on_sentence` receives as soon as its prompts are answered."""

    index: int
    predicted: list[Span]
    unverified: list[Span] | None  # with verify: before it
    raw: dict
    stats: NERStats


def default_max_new_tokens(tokens_batch: Sequence[Sequence[str]]) -> int:
    """Room to copy the longest sentence plus markers (sub-word tokens are rarely under 2 chars)."""
    longest = max((len(" ".join(t)) for t in tokens_batch), default=0)
    return 24 + longest // 2


def run_gpt_ner(
    sentences: Sequence[Sequence[str]],
    types: Sequence[EntityType],
    backend: Backend,
    pool: Sequence[Sentence] = (),
    retriever: Retriever | None = None,
    k: int = 0,
    mode: str = "per_type",
    verify: bool = False,
    verify_k: int = 0,
    chunk: int = 32,
    progress: Callable[[str], None] | None = None,
    on_sentence: Callable[[SentenceOutcome], None] | None = None,
    verify_source: VerifyDemoSource | None = None,
) -> NERResult:
    """Predict entities of `types` for each token list in `sentences`."""
    if mode not in MODES:
        raise UserError(f"mode={mode!r}: choose one of {list(MODES)}")
    if k > 0 and retriever is None:
        raise UserError("k > 0 demonstrations need a retriever (random, sentence or entity)")
    if verify and verify_k > 0 and verify_source is None and k == 0:
        raise UserError(
            f"verify_k={verify_k} needs demos to draw from: k > 0 extraction demos "
            "(verify_demos=extraction) or a pool for per-entity demos (verify_demos=entity)"
        )
    say = progress or (lambda msg: None)
    n = len(sentences)
    demos: list[list[Sentence]] = [[] for _ in range(n)]
    if k > 0 and n:
        say(f"retrieving {k} demos for {n} sentences")
        for i, idx in enumerate(retriever.retrieve_many([list(t) for t in sentences], k)):
            demos[i] = [pool[j] for j in reversed(idx)]

    per_sentence = [NERStats() for _ in range(n)]
    raw: list[dict] = [{"generated": {}, "verify": []} for _ in range(n)]
    found: list[set[Span]] = [set() for _ in range(n)]
    unverified: list[list[Span]] = [[] for _ in range(n)]
    by_label = {t.label: t for t in types}
    passes: list[EntityType | None] = list(types) if mode == "per_type" else [None]
    # Similar lengths together: each chunk gets a generation budget fit for its longest sentence.
    order = sorted(range(n), key=lambda i: len(" ".join(sentences[i])))
    chunks = [order[c : c + chunk] for c in range(0, n, chunk)]
    for c, idx in enumerate(chunks):
        for etype in passes:
            if etype is None:
                prompts = [all_types_prompt(sentences[i], types, demos[i]) for i in idx]
            else:
                prompts = [ner_prompt(sentences[i], etype, demos[i]) for i in idx]
            budget = default_max_new_tokens([sentences[i] for i in idx])
            if etype is None:
                budget += 4 * len(max(by_label, key=len))
            outputs = backend.generate(prompts, budget, STOP)
            for i, text in zip(idx, outputs):
                if etype is None:
                    spans, ps = parse_typed(text, sentences[i], list(by_label))
                    raw[i]["generated"]["all"] = text
                else:
                    spans, ps = parse_marked(text, sentences[i], etype.label)
                    raw[i]["generated"][etype.label] = text
                per_sentence[i].prompts += 1
                per_sentence[i].parse = per_sentence[i].parse + ps
                found[i].update(spans)
        if verify:
            for i in idx:
                unverified[i] = sorted(found[i])
            _verify(
                sentences,
                idx,
                found,
                demos,
                by_label,
                backend,
                verify_k,
                per_sentence,
                raw,
                verify_source,
            )
        for i in idx:
            per_sentence[i].predicted = len(found[i])
            if on_sentence is not None:
                on_sentence(
                    SentenceOutcome(
                        i,
                        sorted(found[i]),
                        unverified[i] if verify else None,
                        raw[i],
                        per_sentence[i],
                    )
                )
        say(f"labeled {sum(len(x) for x in chunks[: c + 1])}/{n} sentences")

    predictions = [sorted(f) for f in found]
    stats = sum(per_sentence, NERStats())
    return NERResult(predictions, stats, raw, unverified if verify else None)


def _verify(
    sentences, idx, found, demos, by_label, backend, verify_k, per_sentence, raw, source=None
) -> None:
    asks = [(i, span) for i in idx for span in sorted(found[i])]
    if not asks:
        return
    if source is not None:
        chosen = source.select([(sentences[i], span) for i, span in asks], verify_k)
    else:
        chosen = [verify_demos(demos[i], by_label[span[2]], verify_k) for i, span in asks]
    prompts = []
    for (i, (s, e, label)), vdemos in zip(asks, chosen):
        word = " ".join(sentences[i][s : e + 1])
        prompts.append(verify_prompt(sentences[i], word, by_label[label], vdemos))
    answers = backend.generate(prompts, 4)
    for (i, span), answer in zip(asks, answers):
        verdict = parse_yes_no(answer)
        raw[i]["verify"].append({"span": list(span), "answer": answer})
        per_sentence[i].prompts += 1
        per_sentence[i].verify_asked += 1
        if verdict is False:
            found[i].discard(span)
            per_sentence[i].verify_rejected += 1
        elif verdict is None:
            per_sentence[i].verify_unclear += 1
