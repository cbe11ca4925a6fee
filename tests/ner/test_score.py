import random

import pytest
from seqeval.metrics import classification_report, f1_score, precision_score, recall_score

from sft.ner.bio import spans_to_tags
from sft.ner.readers import read_sentences
from sft.ner.score import score_spans

from .conftest import data_file


def test_hand_counts_per_type_and_overall():
    gold = [[(0, 0, "PER"), (2, 3, "LOC")], [(1, 1, "ORG")]]
    pred = [[(0, 0, "PER"), (2, 2, "LOC")], [(1, 1, "PER")]]
    r = score_spans(gold, pred)
    assert (r["tp"], r["fp"], r["fn"]) == (1, 2, 2)
    assert r["precision"] == pytest.approx(1 / 3) and r["recall"] == pytest.approx(1 / 3)
    assert r["f1"] == pytest.approx(1 / 3)
    assert r["per_type"]["PER"] == {
        "precision": 0.5,
        "recall": 1.0,
        "f1": pytest.approx(2 / 3),
        "tp": 1,
        "fp": 1,
        "fn": 0,
        "support": 1,
    }
    assert r["per_type"]["ORG"]["f1"] == 0.0 and r["per_type"]["ORG"]["support"] == 1


def test_f1_is_harmonic_mean_not_mean_of_p_and_r():
    gold = [[(i, i, "X") for i in range(10)]]
    pred = [[(0, 0, "X"), (20, 20, "X")]]  # P = 0.5, R = 0.1
    r = score_spans(gold, pred)
    assert r["f1"] == pytest.approx(2 * 0.5 * 0.1 / 0.6)
    assert r["f1"] != pytest.approx((0.5 + 0.1) / 2)


def test_zero_cases():
    assert score_spans([[]], [[]])["f1"] == 0.0
    assert score_spans([[(0, 0, "X")]], [[]])["precision"] == 0.0
    with pytest.raises(ValueError):
        score_spans([[]], [])


def test_nested_spans_are_distinct_exact_spans_and_duplicates_count_once():
    gold = [[(0, 0, "protein"), (0, 1, "DNA"), (0, 1, "protein")]]
    pred = [[(0, 0, "protein"), (0, 0, "protein"), (0, 1, "DNA"), (1, 1, "DNA")]]
    r = score_spans(gold, pred)
    assert (r["tp"], r["fp"], r["fn"]) == (2, 1, 1)


def perturb(sentences, seed):
    """Drop, shift, retype, truncate and invent spans; keep them flat so BIO can hold them."""
    rng = random.Random(seed)
    labels = ["PER", "ORG", "LOC", "MISC"]
    out = []
    for s in sentences:
        n, spans = len(s.tokens), []
        for a, b, t in s.entities:
            op = rng.random()
            if op < 0.10:
                continue  # drop
            if op < 0.20:
                a, b = a + rng.choice([-1, 1]), b + rng.choice([-1, 1])  # shift a boundary
            elif op < 0.30:
                t = rng.choice([x for x in labels if x != t])  # retype
            elif op < 0.35:
                b = a  # truncate
            spans.append((a, b, t))
        if rng.random() < 0.1:
            a = rng.randrange(n)
            spans.append((a, min(n - 1, a + rng.randrange(3)), rng.choice(labels)))  # invent
        flat, used = [], set()
        for a, b, t in spans:
            cells = set(range(a, b + 1))
            if 0 <= a <= b < n and not cells & used:
                flat.append((a, b, t))
                used |= cells
        out.append(flat)
    return out


def check_against_seqeval(gold_spans, pred_spans, lengths):
    y_true = [spans_to_tags(n, g) for n, g in zip(lengths, gold_spans)]
    y_pred = [spans_to_tags(n, p) for n, p in zip(lengths, pred_spans)]
    ours = score_spans(gold_spans, pred_spans)
    assert ours["precision"] == pytest.approx(precision_score(y_true, y_pred), abs=1e-12)
    assert ours["recall"] == pytest.approx(recall_score(y_true, y_pred), abs=1e-12)
    assert ours["f1"] == pytest.approx(f1_score(y_true, y_pred), abs=1e-12)
    report = classification_report(y_true, y_pred, output_dict=True, zero_division=0)
    for label, row in ours["per_type"].items():
        if row["support"] == 0:
            continue
        assert row["precision"] == pytest.approx(report[label]["precision"], abs=1e-12)
        assert row["recall"] == pytest.approx(report[label]["recall"], abs=1e-12)
        assert row["f1"] == pytest.approx(report[label]["f1-score"], abs=1e-12)
        assert row["support"] == report[label]["support"]
    return ours


@pytest.mark.parametrize("seed", range(3))
def test_agrees_with_seqeval_on_synthetic_flat_data(seed):
    rng = random.Random(seed)
    gold, lengths = [], []
    for _ in range(200):
        n = rng.randint(1, 15)
        spans, i = [], 0
        while i < n:
            if rng.random() < 0.3:
                j = min(n - 1, i + rng.randrange(3))
                spans.append((i, j, rng.choice("AB")))
                i = j + 1
            i += 1
        gold.append(spans)
        lengths.append(n)

    class S:
        def __init__(self, n, e):
            self.tokens, self.entities = ["w"] * n, e

    pred = perturb([S(n, g) for n, g in zip(lengths, gold)], seed)
    check_against_seqeval(gold, pred, lengths)


def test_whole_conll2003_dev_against_seqeval():
    sentences = read_sentences(data_file("conll2003", "spans", "dev.jsonl"))
    gold = [s.entities for s in sentences]
    pred = perturb(sentences, seed=13)
    ours = check_against_seqeval(gold, pred, [len(s.tokens) for s in sentences])
    assert ours["tp"] + ours["fn"] == 5942
    assert 0.5 < ours["f1"] < 0.95  # the perturbation is real but partial
    assert check_against_seqeval(gold, gold, [len(s.tokens) for s in sentences])["f1"] == 1.0
