import random

import pytest
from seqeval.metrics.sequence_labeling import get_entities

from sft.ner.bio import spans_to_tags, split_tag, tags_to_spans


def test_iob2_chunks():
    tags = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-ORG", "I-ORG"]
    assert tags_to_spans(tags) == [(0, 1, "PER"), (3, 3, "LOC"), (4, 4, "LOC"), (5, 6, "ORG")]


def test_iob1_and_iobes_follow_conlleval():
    assert tags_to_spans(["I-PER", "I-PER", "O", "I-LOC"]) == [(0, 1, "PER"), (3, 3, "LOC")]
    assert tags_to_spans(["S-PER", "B-LOC", "E-LOC", "I-LOC"]) == [
        (0, 0, "PER"),
        (1, 2, "LOC"),
        (3, 3, "LOC"),
    ]


@pytest.mark.parametrize("seed", range(5))
def test_matches_seqeval_on_random_tag_soup(seed):
    rng = random.Random(seed)
    for _ in range(300):
        tags = [
            rng.choice(["O", "B-A", "I-A", "B-B", "I-B", "E-A", "S-B"])
            for _ in range(rng.randint(1, 12))
        ]
        expected = sorted((s, e, t) for t, s, e in get_entities(tags))
        assert sorted(tags_to_spans(tags)) == expected, tags


def test_roundtrip_flat_spans():
    spans = [(0, 0, "ORG"), (2, 4, "PER"), (5, 5, "PER")]
    assert tags_to_spans(spans_to_tags(6, spans)) == spans


def test_spans_to_tags_rejects_overlap_and_range():
    with pytest.raises(ValueError, match="overlaps"):
        spans_to_tags(5, [(0, 2, "A"), (2, 3, "B")])
    with pytest.raises(ValueError, match="out of range"):
        spans_to_tags(3, [(2, 3, "A")])


@pytest.mark.parametrize("bad", ["B", "X-PER", "B-", "PER"])
def test_split_tag_rejects_bad_tags(bad):
    with pytest.raises(ValueError):
        split_tag(bad)
