import inspect
import json

import pytest

from sft.errors import UserError
from sft.ner.entity_types import load_types
from sft.ner.parse import parse_marked, parse_typed
from sft.ner.prompts import ner_prompt
from sft.ner.readers import read_sentences
from sft.ner.sft_data import build_conversations

from .conftest import data_file


@pytest.fixture
def wnut_like(tmp_path):
    d = tmp_path / "wnut17" / "spans"
    d.mkdir(parents=True)
    rows = [
        {
            "tokens": ["I", "love", "New", "York", "and", "Apple"],
            "entities": [[2, 3, "location"], [5, 5, "corporation"]],
        },
        {"tokens": ["so", "tired"], "entities": []},
    ]
    p = d / "train.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return p


def test_signature_the_data_pipeline_relies_on():
    sig = inspect.signature(build_conversations)
    assert list(sig.parameters) == [
        "path",
        "dataset",
        "mode",
        "types_file",
        "limit",
        "pool_size",
        "pool_seed",
    ]
    assert (
        sig.parameters["dataset"].default == "auto" and sig.parameters["mode"].default == "per_type"
    )


def test_per_type_rows(wnut_like):
    rows = build_conversations(str(wnut_like), dataset="wnut17")
    assert len(rows) == 2 * 6 and len({r["id"] for r in rows}) == 12
    row = next(r for r in rows if r["id"] == "wnut17-0-location")
    user, assistant = row["messages"]
    assert user == {
        "role": "user",
        "content": ner_prompt(
            ["I", "love", "New", "York", "and", "Apple"], load_types("wnut17")[1]
        ),
    }
    assert assistant == {"role": "assistant", "content": "I love @@New York## and Apple"}
    assert rows == build_conversations(str(wnut_like))  # dataset auto-detected from the path


def test_all_types_rows_parse_back(wnut_like):
    rows = build_conversations(str(wnut_like), mode="all_types", limit=1)
    assert len(rows) == 1
    user, assistant = (m["content"] for m in rows[0]["messages"])
    assert (
        "where TYPE is one of person, location, corporation, group, creative-work, product" in user
    )
    assert assistant == "I love @@New York##location and @@Apple##corporation"


def test_types_file_and_custom_dataset(tmp_path, wnut_like):
    t = tmp_path / "types.yaml"
    t.write_text("location: Places people go.\n")
    rows = build_conversations(str(wnut_like), types_file=str(t), limit=1)
    assert "Places people go." in rows[1]["messages"][0]["content"]
    other = tmp_path / "mine.jsonl"
    other.write_text(
        json.dumps({"tokens": ["Aspirin", "works"], "entities": [[0, 0, "DRUG"]]}) + "\n"
    )
    t2 = tmp_path / "drug.yaml"
    t2.write_text("DRUG: {name: drug, description: Drug entities are medicines.}\n")
    rows = build_conversations(str(other), types_file=str(t2))
    assert (
        rows[0]["id"] == "custom-0-DRUG"
        and rows[0]["messages"][1]["content"] == "@@Aspirin## works"
    )


def test_errors(tmp_path, wnut_like):
    with pytest.raises(UserError, match="mode="):
        build_conversations(str(wnut_like), mode="joint")
    with pytest.raises(UserError, match="limit"):
        build_conversations(str(wnut_like), limit=0)
    other = tmp_path / "mine.jsonl"
    other.write_text(json.dumps({"tokens": ["x"], "entities": [[0, 0, "DRUG"]]}) + "\n")
    with pytest.raises(UserError, match="cannot tell the NER dataset"):
        build_conversations(str(other))
    with pytest.raises(UserError, match=r"types \['DRUG'\]"):
        build_conversations(str(other), dataset="conll2003")


@pytest.mark.parametrize("dataset,split", [("wnut17", "dev"), ("genia", "dev")])
def test_every_assistant_turn_parses_back_to_gold(dataset, split):
    path = data_file(dataset, "spans", f"{split}.jsonl")
    sentences = read_sentences(path)
    labels = [t.label for t in load_types(dataset)]
    for mode in ("per_type", "all_types"):
        rows = build_conversations(str(path), dataset=dataset, mode=mode)
        assert len(rows) == len(sentences) * (len(labels) if mode == "per_type" else 1)
        for row in rows:
            _, i, *label = row["id"].split("-", 2)
            gold = sentences[int(i)]
            answer = row["messages"][1]["content"]
            if mode == "per_type":
                spans, st = parse_marked(answer, gold.tokens, label[0])
                assert spans == [e for e in gold.entities if e[2] == label[0]], row["id"]
            else:
                spans, st = parse_typed(answer, gold.tokens, labels)
                assert spans == gold.entities, row["id"]
            assert st.hallucinated_entities == st.unbalanced_markers == st.untyped == 0
