import json

import pytest

from sft.errors import UserError
from sft.ner.readers import (
    Sentence,
    read_columns,
    read_mrc,
    read_sentences,
    read_spans_jsonl,
    read_w2ner,
    sniff_format,
    write_spans_jsonl,
)

from .conftest import data_file


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_conll_4col_with_docstart(tmp_path):
    p = write(
        tmp_path,
        "c.txt",
        "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n"
        "German JJ B-NP B-MISC\n\nPeter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n",
    )
    sents = read_sentences(p)
    assert [s.tokens for s in sents] == [["EU", "rejects", "German"], ["Peter", "Blackburn"]]
    assert sents[0].entities == [(0, 0, "ORG"), (2, 2, "MISC")]
    assert sents[1].entities == [(0, 1, "PER")]


def test_two_columns_tab_with_whitespace_only_separators(tmp_path):
    p = write(
        tmp_path,
        "w.conll",
        "@paul\tO\nEmpire\tB-location\nState\tI-location\n\t\nApple\tB-corporation\n",
    )
    sents = read_columns(p)
    assert sents[0] == Sentence(["@paul", "Empire", "State"], [(1, 2, "location")])
    assert sents[1] == Sentence(["Apple"], [(0, 0, "corporation")])


@pytest.mark.parametrize(
    "line,needle", [("EU\n", "expected 'word ... tag'"), ("EU B_ORG\n", "bad tag")]
)
def test_columns_errors_name_file_and_line(tmp_path, line, needle):
    p = write(tmp_path, "bad.txt", "ok O\n\n" + line)
    with pytest.raises(UserError, match=rf"bad.txt:3: .*{needle}"):
        read_columns(p)


def test_spans_jsonl_and_roundtrip(tmp_path):
    rows = [{"tokens": ["a", "b", "c"], "entities": [[1, 2, "X"], [0, 0, "Y"]]}, {"tokens": ["d"]}]
    p = write(tmp_path, "s.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    sents = read_spans_jsonl(p)
    assert sents[0].entities == [(0, 0, "Y"), (1, 2, "X")]  # sorted
    assert sents[1].entities == []
    out = tmp_path / "o.jsonl"
    write_spans_jsonl(out, sents, extra=[{"k": 1}, {"k": 2}])
    assert read_spans_jsonl(out) == sents
    assert json.loads(out.read_text().splitlines()[1])["k"] == 2


@pytest.mark.parametrize(
    "line,needle",
    [
        ('{"tokens": ["a"], "entities": [[0, 1, "X"]]}', "out of range"),
        ('{"tokens": ["a"], "entities": [[0, "X"]]}', "bad entity"),
        ('{"tokens": []}', "empty 'tokens'"),
        ('{"tokens": ["a"]', "invalid JSON"),
        ('["a"]', "expected an object"),
    ],
)
def test_spans_jsonl_errors(tmp_path, line, needle):
    p = write(tmp_path, "bad.jsonl", '{"tokens": ["ok"], "entities": []}\n' + line + "\n")
    with pytest.raises(UserError, match=rf"bad.jsonl:2: .*{needle}"):
        read_spans_jsonl(p)


def test_w2ner_nested(tmp_path):
    recs = [
        {
            "sentence": ["IL-2", "gene", "expression"],
            "ner": [{"index": [0, 1], "type": "DNA"}, {"index": [0], "type": "protein"}],
        }
    ]
    p = write(tmp_path, "g.json", json.dumps(recs))
    assert read_sentences(p) == [
        Sentence(["IL-2", "gene", "expression"], [(0, 0, "protein"), (0, 1, "DNA")])
    ]
    recs[0]["ner"].append({"index": [0, 2], "type": "DNA"})
    write(tmp_path, "g.json", json.dumps(recs))
    with pytest.raises(UserError, match="g.json: record 0: .*not contiguous"):
        read_w2ner(p)


def test_mrc_groups_records_into_sentences(tmp_path):
    recs = [
        {
            "context": "EU rejects German call",
            "entity_label": "ORG",
            "qas_id": "0.1",
            "start_position": [0],
            "end_position": [0],
        },
        {
            "context": "EU rejects German call",
            "entity_label": "MISC",
            "qas_id": "0.2",
            "start_position": [2],
            "end_position": [2],
        },
        {
            "context": "LONDON 1996",
            "entity_label": "ORG",
            "qas_id": "1.1",
            "start_position": [],
            "end_position": [],
        },
    ]
    p = write(tmp_path, "mrc-ner.dev", json.dumps(recs))
    assert sniff_format(p) == "mrc"
    assert read_sentences(p) == [
        Sentence(["EU", "rejects", "German", "call"], [(0, 0, "ORG"), (2, 2, "MISC")]),
        Sentence(["LONDON", "1996"], []),
    ]
    recs[1]["end_position"] = []
    write(tmp_path, "mrc-ner.dev", json.dumps(recs))
    with pytest.raises(UserError, match="record 1: .*equal length"):
        read_mrc(p)


def test_json_syntax_error_names_line(tmp_path):
    p = write(tmp_path, "x.json", '[\n{"sentence": ["a"], "ner": []},\n{oops}\n]')
    with pytest.raises(UserError, match=r"x.json:3: invalid JSON"):
        read_sentences(p)


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        read_sentences(tmp_path / "nope.jsonl")


# The shipped files: every format of a dataset must give the same sentences.


def test_conll2003_dev_all_formats_agree():
    spans = read_sentences(data_file("conll2003", "spans", "dev.jsonl"))
    assert len(spans) == 3250 and sum(len(s.entities) for s in spans) == 5942
    assert read_sentences(data_file("conll2003", "raw_4col", "valid.txt")) == spans
    assert read_sentences(data_file("conll2003", "bio_2col", "valid.txt")) == spans
    assert read_sentences(data_file("conll2003", "mrc", "mrc-ner.dev")) == spans


def test_wnut17_test_formats_agree():
    spans = read_sentences(data_file("wnut17", "spans", "test.jsonl"))
    assert len(spans) == 1287
    assert read_sentences(data_file("wnut17", "emerging.test.annotated")) == spans
    assert read_sentences(data_file("wnut17", "mrc", "mrc-ner.test")) == spans


def test_genia_dev_nested_formats_agree():
    spans = read_sentences(data_file("genia", "spans", "dev.jsonl"))
    assert len(spans) == 1669
    assert read_sentences(data_file("genia", "dev.w2ner.json")) == spans
    assert read_sentences(data_file("genia", "mrc", "mrc-ner.dev")) == spans
    nested = sum(
        1
        for s in spans
        for a in s.entities
        for b in s.entities
        if a != b and a[0] <= b[0] and b[1] <= a[1]
    )
    assert nested > 0
