import pytest

from sft.errors import UserError
from sft.ner.datasets import data_root, dataset_file, infer_dataset


def test_data_root_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv("SFT_DATA_DIR", str(tmp_path))
    assert data_root() == tmp_path
    monkeypatch.delenv("SFT_DATA_DIR")
    assert data_root().parts[-2:] == ("shared", "data")


def test_dataset_file(monkeypatch, tmp_path):
    monkeypatch.setenv("SFT_DATA_DIR", str(tmp_path))
    (tmp_path / "wnut17" / "spans").mkdir(parents=True)
    (tmp_path / "wnut17" / "spans" / "dev.jsonl").write_text("{}\n")
    assert dataset_file("wnut17", "dev") == tmp_path / "wnut17" / "spans" / "dev.jsonl"
    with pytest.raises(UserError, match="set SFT_DATA_DIR"):
        dataset_file("wnut17", "test")
    with pytest.raises(UserError, match=r"genia has no 'train' split; it has \['dev', 'test'\]"):
        dataset_file("genia", "train")
    with pytest.raises(UserError, match="unknown NER dataset 'ontonotes'"):
        dataset_file("ontonotes", "dev")


def test_infer_dataset():
    assert infer_dataset("../shared/data/wnut17/spans/train.jsonl") == "wnut17"
    assert infer_dataset("/x/CoNLL2003/raw_4col/train.txt") == "conll2003"
    with pytest.raises(UserError, match="cannot tell"):
        infer_dataset("/x/mine/train.jsonl")
