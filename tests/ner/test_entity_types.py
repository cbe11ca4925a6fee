import json
from pathlib import Path

import pytest

from sft.errors import UserError
from sft.ner.entity_types import DEFAULT_TYPES, EntityType, load_types
from sft.ner.readers import read_sentences

from .conftest import data_file

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "ner"


def test_defaults_have_the_papers_type_sets():
    assert [t.label for t in load_types("conll2003")] == ["PER", "ORG", "LOC", "MISC"]
    assert len(load_types("wnut17")) == 6
    assert {t.label for t in load_types("genia")} == {
        "DNA",
        "RNA",
        "cell_line",
        "cell_type",
        "protein",
    }
    for types in DEFAULT_TYPES.values():
        assert all(t.description and t.name for t in types)


@pytest.mark.parametrize(
    "dataset,split", [("conll2003", "dev"), ("wnut17", "dev"), ("genia", "dev")]
)
def test_defaults_cover_every_label_in_the_data(dataset, split):
    labels = {
        e[2]
        for s in read_sentences(data_file(dataset, "spans", f"{split}.jsonl"))
        for e in s.entities
    }
    assert labels == {t.label for t in load_types(dataset)}


def test_article():
    assert EntityType("ORG", "organization", "").article == "an"
    assert EntityType("PER", "person", "").article == "a"


def test_yaml_override_of_shipped_example():
    types = {t.label: t for t in load_types("wnut17", CONFIGS / "types_wnut17_short.yaml")}
    assert types["creative-work"].name == "title"
    assert types["person"].description.startswith(
        "Person entities are names of people, including usernames"
    )
    assert types["product"] == {t.label: t for t in DEFAULT_TYPES["wnut17"]}["product"]


def test_json_file_defines_types_of_unknown_dataset(tmp_path):
    p = tmp_path / "t.json"
    p.write_text(json.dumps({"DRUG": "Drug entities are medicines.", "DOSE": {"name": "dose"}}))
    types = load_types("pharma", p)
    assert [(t.label, t.name) for t in types] == [("DRUG", "DRUG"), ("DOSE", "dose")]


def test_errors(tmp_path):
    with pytest.raises(UserError, match="no entity types known"):
        load_types("pharma")
    p = tmp_path / "t.yaml"
    p.write_text("PERSON: typo label\n")
    with pytest.raises(UserError, match=r"\['PERSON'\] are not types of conll2003"):
        load_types("conll2003", p)
    p.write_text("PER: {colour: red}\n")
    with pytest.raises(UserError, match="name/description"):
        load_types("conll2003", p)
    with pytest.raises(UserError, match="not found"):
        load_types("conll2003", tmp_path / "missing.yaml")
