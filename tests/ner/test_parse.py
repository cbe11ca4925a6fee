import random

import pytest

from sft.ner.parse import ParseStats, answer_line, parse_marked, parse_typed
from sft.ner.prompts import mark, mark_typed

TOKS = ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."]


def spans(text, tokens=TOKS, label="X"):
    got, _ = parse_marked(text, tokens, label)
    return [(s, e) for s, e, _ in got]


def stats(text, tokens=TOKS):
    return parse_marked(text, tokens, "X")[1]


def test_exact_output_roundtrip_with_clean_stats():
    got, st = parse_marked(mark(TOKS, [(0, 0), (6, 7)]), TOKS, "MISC")
    assert got == [(0, 0, "MISC"), (6, 7, "MISC")]
    assert st == ParseStats(marked=2, kept=2)


def test_random_roundtrips_nested_and_typed():
    rng = random.Random(0)
    vocab = ["the", "The", "cat", "@user", "#tag", "C#", "a", ".", "New", "York", "IL-2", "##x"[1:]]
    for _ in range(300):
        toks = [rng.choice(vocab) for _ in range(rng.randint(1, 10))]
        ents = set()
        for _ in range(rng.randint(0, 4)):
            s = rng.randrange(len(toks))
            e = rng.randrange(s, len(toks))
            # Nested or disjoint only: crossing spans have no bracket structure (none in GENIA).
            if all(
                e < a or b < s or (s <= a and b <= e) or (a <= s and e <= b) for a, b, _ in ents
            ):
                ents.add((s, e, rng.choice(["DNA", "protein", "cell_line"])))
        got, st = parse_typed(mark_typed(toks, ents), toks, ["DNA", "protein", "cell_line"])
        assert got == sorted(ents), (toks, ents)
        assert st.hallucinated_entities == st.unbalanced_markers == st.snapped == 0
        untyped = sorted({(s, e, "X") for s, e, _ in ents})
        assert parse_marked(mark(toks, ents), toks, "X")[0] == untyped


def test_changed_whitespace_and_case():
    assert spans("@@eu##rejects German call to boycott British lamb.") == [(0, 0)]
    assert spans("EU rejects  @@GERMAN ##  call") == [(2, 2)]
    toks = ["He", "visited", "the", "U.S.", "and", "did", "n't", "stay", "."]
    assert spans("He visited the @@U. S.## and didn't stay.", toks) == [(3, 3)]
    assert stats("He visited the @@U. S.## and didn't stay.", toks).snapped == 0


def test_boundary_inside_a_word_snaps_to_word_edges():
    toks = ["New", "York-based", "Acme", "Corp"]
    got, st = parse_marked("@@New York##-based Acme Corp", toks, "LOC")
    assert got == [(0, 1, "LOC")] and st.snapped == 1


def test_repeated_words_align_by_position():
    toks = ["the", "cat", "saw", "the", "dog", "near", "the", "cat"]
    assert spans("the cat saw the dog near the @@cat##", toks) == [(7, 7)]
    assert spans("the @@cat## saw the dog near the cat", toks) == [(1, 1)]
    # A dropped word does not pull the marker onto the first "the".
    assert spans("the cat @@the## dog near the cat", toks) == [(3, 3)]
    # An inserted word neither.
    assert spans("the big cat saw @@the dog## near the cat", toks) == [(3, 4)]


def test_answer_line_selection():
    text = "The labeled sentence: @@EU## rejects German call\n\nThe given sentence: Peter went\n"
    assert answer_line(text) == "@@EU## rejects German call"
    assert spans(text) == [(0, 0)]
    assert spans("Sure! Here it is:\n@@EU## rejects German call to boycott British lamb .") == [
        (0, 0)
    ]
    assert answer_line("\n\n  plain text  \n") == "plain text"
    assert spans('"EU rejects @@German## call to boycott British lamb ."') == [(2, 2)]


def test_nested_markers():
    toks = ["NF-kappa", "B", "activation"]
    assert spans("@@@@NF-kappa## B## activation", toks) == [(0, 0), (0, 1)]
    assert spans("@@NF-kappa @@B## activation##", toks) == [(0, 2), (1, 1)]


def test_unbalanced_markers_are_counted_and_ignored():
    got, st = parse_marked("@@EU rejects @@German## call", TOKS, "X")
    assert got == [(2, 2, "X")] and st.unbalanced_markers == 1
    got, st = parse_marked("EU## rejects @@German## call##", TOKS, "X")
    assert got == [(2, 2, "X")] and st.unbalanced_markers == 2


def test_hallucinated_entity_is_dropped_and_counted():
    got, st = parse_marked(
        "@@John Smith## rejects German call to boycott British lamb .", TOKS, "PER"
    )
    assert got == [] and st.hallucinated_entities == 1 and st.marked == 1
    assert st.hallucinated_words == 2


def test_hallucinated_word_inside_entity_is_dropped():
    toks = ["Peter", "Blackburn", "said", "so"]
    got, st = parse_marked("@@Mr. Peter Blackburn## said so", toks, "PER")
    assert got == [(0, 1, "PER")] and st.hallucinated_words == 1 and st.hallucinated_entities == 0


def test_short_accidental_matches_do_not_make_entities():
    toks = ["The", "cat", "sat"]
    assert spans("@@Bat## cat sat", toks) == []
    assert spans("The cat sat on the @@Mat##", toks) == []
    # ... but a whole one-letter word matching a whole word is kept.
    toks = ["I", "love", "New", "York"]
    assert spans("@@I## adore @@New York##", toks) == [(0, 0), (2, 3)]


def test_empty_and_marker_free_outputs():
    assert parse_marked("", TOKS, "X") == ([], ParseStats())
    got, st = parse_marked(" ".join(TOKS), TOKS, "X")
    assert got == [] and st == ParseStats()
    got, st = parse_marked("EU @@## rejects", TOKS, "X")
    assert got == [] and st.hallucinated_entities == 1


def test_at_and_hash_inside_words():
    toks = ["@paul", "loves", "#Python", "and", "C#"]
    assert spans("@@@paul## loves @@#Python## and @@C###", toks) == [(0, 0), (2, 2), (4, 4)]


def test_typed_labels():
    labels = ["ORG", "MISC"]
    assert parse_typed("@@EU##org rejects @@German##MISC call", TOKS, labels)[0] == [
        (0, 0, "ORG"),
        (2, 2, "MISC"),
    ]
    got, st = parse_typed("@@EU##COMPANY rejects @@German## call", TOKS, labels)
    assert got == [] and st.untyped == 2
    got, _ = parse_typed("@@HeLa##cell_line cells", ["HeLa", "cells"], ["cell", "cell_line"])
    assert got == [(0, 0, "cell_line")]
    # A label glued to more letters is not a label.
    assert parse_typed("@@EU##ORGANIZATION rejects", TOKS, labels)[1].untyped == 1


def test_long_sentence_beyond_difflib_autojunk_threshold():
    toks = [f"w{i % 7}" for i in range(150)]
    target = [(149, 149), (70, 72)]
    assert spans(mark(toks, target), toks) == sorted(target)


def test_stats_add():
    a = ParseStats(marked=1, kept=1, snapped=1)
    assert (a + a).as_dict() == {**ParseStats().as_dict(), "marked": 2, "kept": 2, "snapped": 2}


@pytest.mark.parametrize("text", ["@@", "##", "@@@@####", "@", "#", "@@ ##"])
def test_degenerate_outputs_never_crash(text):
    got, _ = parse_marked(text, TOKS, "X")
    assert got == []


def test_a_dropped_word_never_stretches_an_entity():
    # The alignment block "an statistics" used to run across the closing marker into "grain".
    toks = ["Canadian", "grain", "statistics", "weekly", "."]
    assert parse_typed("@@Canadian##MISC statistics weekly .", toks, ["MISC"])[0] == [
        (0, 0, "MISC")
    ]
    toks = ["An", "Australian", "man", "who", "went"]
    assert spans("An @@Australian## who went", toks) == [(1, 1)]
    # A block of 3+ characters across the marker ("can opener" matching the entity's "can").
    toks = ["Mexican", "can", "opener", "sales"]
    assert spans("@@Mexican## opener sales", toks) == [(0, 0)]
    toks = ["the", "cat", "saw", "the", "New", "York", "cat", "near", "New", "York", "."]
    assert spans("the cat saw the @@New York## cat @@New York## .", toks) == [(4, 5), (8, 9)]


def test_a_far_boundary_word_is_trimmed_when_entity_text_changed():
    # No words spell "kanadian": the fuzzy path runs, and its last "n" must not pull in "grain".
    toks = ["Canadian", "grain", "statistics", "weekly", "."]
    assert spans("@@Kanadian## statistics weekly .", toks) == [(0, 0)]
    # A 3-letter piece "ian" aligned into the far end of the dropped "parliamentarian".
    toks = ["Australian", "parliamentarian", "John", "Langmore", "has", "formally", "resigned"]
    got, st = parse_marked("@@Austraqian## John Langmore has formally resigned", toks, "MISC")
    assert got == [(0, 0, "MISC")] and st.trimmed == 1
    # A mostly aligned boundary word stays: "rain" is most of "grain".
    toks = ["Canadian", "grain", "statistics", "weekly", "."]
    got, st = parse_marked("@@Canadian rain## statistics weekly .", toks, "MISC")
    assert got == [(0, 1, "MISC")] and st.trimmed == 0


def test_an_inserted_copy_of_the_entity_word_does_not_lose_the_entity():
    toks = ["Germany", "'s", "exports", "rose"]
    got, st = parse_marked("@@Germany## Germany 's exports rose", toks, "LOC")
    assert got == [(0, 0, "LOC")] and st.hallucinated_entities == 0


def test_typed_label_after_a_space_or_in_brackets():
    labels = ["ORG", "MISC", "PER"]
    for text in [
        "@@EU## ORG rejects",
        "@@EU##(ORG) rejects",
        "@@EU## (org) rejects",
        "@@EU##[ORG]",
    ]:
        got, st = parse_typed(text, TOKS, labels)
        assert got == [(0, 0, "ORG")] and st.untyped == 0, text
    # A lowercase word after the marker is a word of the sentence, not a label.
    toks = ["EU", "per", "German"]
    got, st = parse_typed("@@EU## per German", toks, labels)
    assert got == [] and st.untyped == 1


def test_a_trailing_note_does_not_win_over_the_rewritten_sentence():
    sent = "EU rejects German call to boycott British lamb ."
    assert spans(sent + "\nNote: I marked @@German## as an entity.") == []
    assert spans("@@EU## rejects German call to boycott British lamb .\nNote: @@German## too") == [
        (0, 0)
    ]
    assert answer_line(sent + "\nNote: @@British lamb## is a product.", TOKS) == sent
    # A marked copy of the sentence beats an unmarked echo of it.
    assert spans(f"{sent}\n@@EU## rejects German call to boycott British lamb .") == [(0, 0)]
