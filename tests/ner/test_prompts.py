import re

from sft.ner.entity_types import EntityType, load_types
from sft.ner.prompts import (
    VerifyDemo,
    all_types_prompt,
    mark,
    mark_typed,
    ner_prompt,
    parse_yes_no,
    verify_demos,
    verify_prompt,
)
from sft.ner.readers import Sentence

PER, ORG, LOC, MISC = load_types("conll2003")
TOKS = ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."]


def test_mark_flat_nested_and_typed():
    assert (
        mark(TOKS, [(2, 2), (6, 7)]) == "EU rejects @@German## call to boycott @@British lamb## ."
    )
    assert mark(["IL-2", "gene", "x"], [(0, 1), (0, 0)]) == "@@@@IL-2## gene## x"
    assert (
        mark_typed(["IL-2", "gene"], [(0, 1, "DNA"), (0, 0, "protein")])
        == "@@@@IL-2##protein gene##DNA"
    )
    assert mark(TOKS, []) == " ".join(TOKS)


def test_mark_strips_back_to_sentence():
    marked = mark(TOKS, [(0, 0, "ORG"), (0, 2, "X"), (6, 6, "MISC")])
    assert re.sub("@@|##", "", marked) == " ".join(TOKS)


def test_ner_prompt_shape():
    demo = Sentence(["Peter", "Blackburn", "in", "Paris"], [(0, 1, "PER"), (3, 3, "LOC")])
    p = ner_prompt(TOKS, PER, [demo])
    assert "label person entities" in p and PER.description in p
    assert (
        "The given sentence: Peter Blackburn in Paris\nThe labeled sentence: @@Peter Blackburn## in Paris"
        in p
    )
    assert p.endswith("The given sentence: " + " ".join(TOKS) + "\nThe labeled sentence:")
    assert "Below are some examples" in p
    assert "Below are some examples" not in ner_prompt(TOKS, PER)
    # Other types' entities are not marked in a demo for PER.
    assert "@@Paris" not in p


def test_all_types_prompt_lists_labels_and_marks_typed():
    demo = Sentence(["Peter", "in", "Paris"], [(0, 0, "PER"), (2, 2, "LOC")])
    p = all_types_prompt(TOKS, [PER, ORG, LOC, MISC], [demo])
    assert "@@entity##TYPE, where TYPE is one of PER, ORG, LOC, MISC" in p
    assert "The labeled sentence: @@Peter##PER in @@Paris##LOC" in p


def test_verify_prompt_question_text():
    p = verify_prompt(TOKS, "EU", ORG)
    assert p.endswith(
        "The given sentence: " + " ".join(TOKS) + '\nIs the word "EU" in the given sentence '
        "an organization entity? Please answer with yes or no."
    )
    demos = [VerifyDemo(("Peter", "ran"), "Peter", True)]
    p = verify_prompt(TOKS, "German", PER, demos)
    assert (
        'Is the word "Peter" in the given sentence a person entity? Please answer with yes or no.\nyes'
        in p
    )


def test_verify_demos_alternate_and_keep_most_similar_last():
    far = Sentence(["Bob", "in", "Rome"], [(0, 0, "PER"), (2, 2, "LOC")])
    near = Sentence(["Ann", "at", "IBM"], [(0, 0, "PER"), (2, 2, "ORG")])
    got = verify_demos([far, near], PER, 3)
    assert [(d.word, d.answer) for d in got] == [("Bob", True), ("IBM", False), ("Ann", True)]
    assert verify_demos([far], EntityType("X", "x", ""), 4) == [
        VerifyDemo(("Bob", "in", "Rome"), "Bob", False),
        VerifyDemo(("Bob", "in", "Rome"), "Rome", False),
    ]


def test_parse_yes_no():
    assert parse_yes_no(" Yes.") is True
    assert parse_yes_no("no, it is not") is False
    assert parse_yes_no('"yes"') is True
    assert parse_yes_no("maybe") is None
    assert parse_yes_no("") is None
    assert parse_yes_no("nope") is None


def test_the_prompts_shown_in_docs_are_the_real_ones():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "ner.md").read_text()
    blocks = re.findall(r"```\n(.*?)\n```", doc.split("## The prompt")[1], re.DOTALL)
    demo = Sentence(
        ["Peter", "Blackburn", "met", "officials", "in", "Brussels"], [(0, 1, "PER"), (5, 5, "LOC")]
    )
    query = ["Japan", "coach", "Shu", "Kamo", "said", "the", "team", "played", "well", "."]
    assert blocks[0] == ner_prompt(query, PER, [demo])
    assert blocks[1] == verify_prompt(query, "Shu Kamo", PER)
