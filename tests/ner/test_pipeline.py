import re

import pytest

from sft.errors import UserError
from sft.ner.backends import HFBackend, OpenAIBackend
from sft.ner.entity_types import EntityType, load_types
from sft.ner.pipeline import run_gpt_ner
from sft.ner.readers import Sentence
from sft.ner.retrieval import RandomRetriever, SentenceKNN

from .conftest import capitalized_runs, fake_answer
from .test_retrieval import BowEmbedder

TYPES = load_types("conll2003")
SENTS = [["Peter", "met", "Ann", "in", "New", "York"], ["nothing", "here"], ["IBM", "rose"]]
POOL = [
    Sentence(["Bob", "in", "Rome"], [(0, 0, "PER"), (2, 2, "LOC")]),
    Sentence(["Acme", "hired", "Sue"], [(0, 0, "ORG"), (2, 2, "PER")]),
    Sentence(["rain", "fell"], []),
]


class ScriptedBackend:
    """A Backend that answers with a Python function and records every prompt."""

    def __init__(self, answer):
        self.answer, self.prompts = answer, []

    def generate(self, prompts, max_new_tokens, stop=()):
        assert max_new_tokens > 0
        self.prompts += list(prompts)
        return [self.answer(p) for p in prompts]


def type_of(prompt):
    m = re.search(r"label (.+?) entities in the given sentence", prompt)
    return m and m.group(1)


def test_end_to_end_through_a_real_http_server(llm_server):
    url, state = llm_server
    res = run_gpt_ner(
        SENTS,
        TYPES[:2],
        OpenAIBackend(url, "m"),
        pool=POOL,
        retriever=RandomRetriever(POOL, seed=0),
        k=2,
        verify=True,
    )
    expected = [
        sorted((s, e, t.label) for s, e in capitalized_runs(words) for t in TYPES[:2])
        for words in SENTS
    ]
    assert res.predictions == expected
    n_found = sum(len(p) for p in expected)
    assert res.stats.prompts == len(SENTS) * 2 + n_found
    assert res.stats.verify_asked == n_found and res.stats.verify_rejected == 0
    ner_prompts = [r["body"]["messages"][0]["content"] for r in state["requests"]][: len(SENTS) * 2]
    assert all(p.count("The given sentence:") == 3 for p in ner_prompts)  # 2 demos + query
    assert res.raw[0]["generated"]["PER"] == "@@Peter## met @@Ann## in @@New York##"


def test_verification_covers_every_type_including_per():
    def answer(p):
        if "Please answer with yes or no" in p:
            return "No." if "a person entity" in p else "yes"
        return fake_answer(p)

    backend = ScriptedBackend(answer)
    res = run_gpt_ner(SENTS, TYPES, backend, verify=True)
    asked = [p for p in backend.prompts if "Please answer" in p]
    assert any("a person entity" in p for p in asked) and any(
        "a location entity" in p for p in asked
    )
    assert all(label != "PER" for pred in res.predictions for *_, label in pred)
    per_found = sum(len(capitalized_runs(w)) for w in SENTS)
    assert res.stats.verify_rejected == per_found
    assert res.stats.parse.kept == res.stats.predicted + res.stats.verify_rejected


def test_unclear_verification_keeps_the_entity():
    backend = ScriptedBackend(lambda p: "perhaps" if "Please answer" in p else fake_answer(p))
    res = run_gpt_ner(SENTS[:1], TYPES[:1], backend, verify=True)
    assert res.predictions == [[(0, 0, "PER"), (2, 2, "PER"), (4, 5, "PER")]]
    assert res.stats.verify_unclear == 3


def test_verification_demos_come_from_retrieved_sentences():
    backend = ScriptedBackend(lambda p: "yes" if "Please answer" in p else fake_answer(p))
    run_gpt_ner(
        SENTS[2:],
        TYPES[:1],
        backend,
        pool=POOL,
        retriever=RandomRetriever(POOL),
        k=3,
        verify=True,
        verify_k=2,
    )
    verify = next(p for p in backend.prompts if "Please answer" in p)
    assert verify.count("Please answer with yes or no.") == 3
    assert re.search(
        r'Is the word "(Bob|Sue)" in the given sentence a person entity\? Please answer with yes or no.\nyes',
        verify,
    )


def test_demos_are_ordered_most_similar_last():
    backend = ScriptedBackend(fake_answer)
    pool = [
        Sentence(["the", "dog", "sat", "on", "the", "rug"]),
        Sentence(["Paris", "is", "far"], [(0, 0, "LOC")]),
        Sentence(["the", "cat", "sat", "on", "the", "rug"]),
    ]
    run_gpt_ner(
        [["the", "cat", "sat", "on", "the", "mat"]],
        TYPES[2:3],
        backend,
        pool=pool,
        retriever=SentenceKNN(pool, BowEmbedder()),
        k=2,
    )
    demos = re.findall(r"The given sentence: (.*)", backend.prompts[0])
    assert demos == ["the dog sat on the rug", "the cat sat on the rug", "the cat sat on the mat"]


def test_all_types_mode_and_hallucination_stats():
    def answer(p):
        assert "where TYPE is one of PER, ORG, LOC, MISC" in p
        return "@@Peter##PER met @@Zoe##PER in @@New York##LOC and @@x##"

    res = run_gpt_ner(SENTS[:1], TYPES, ScriptedBackend(answer), mode="all_types")
    assert res.predictions == [[(0, 0, "PER"), (4, 5, "LOC")]]
    st = res.stats.parse
    assert st.marked == 4 and st.hallucinated_entities == 2 and st.kept == 2
    assert st.marked == st.kept + st.hallucinated_entities + st.untyped
    assert res.stats.prompts == 1


def test_bad_arguments():
    with pytest.raises(UserError, match="need a retriever"):
        run_gpt_ner(SENTS, TYPES, ScriptedBackend(fake_answer), k=2)
    with pytest.raises(UserError, match="mode="):
        run_gpt_ner(SENTS, TYPES, ScriptedBackend(fake_answer), mode="joint")


def test_tiny_hf_model_runs_the_whole_pipeline(tiny):
    model, tok = tiny
    types = [EntityType("X", "thing", "Things.")]
    res = run_gpt_ner(
        SENTS,
        types,
        HFBackend(model, tok, batch_size=2),
        pool=POOL,
        retriever=RandomRetriever(POOL),
        k=1,
        verify=True,
        chunk=2,
    )
    assert len(res.predictions) == len(SENTS)
    for words, pred in zip(SENTS, res.predictions):
        assert all(0 <= s <= e < len(words) and t == "X" for s, e, t in pred)
    assert res.stats.prompts >= len(SENTS)
