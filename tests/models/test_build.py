"""Model/tokenizer loading: chat template override, clear errors, use_cache off."""

from __future__ import annotations

import pytest

from sft.config import ModelConfig
from sft.errors import UserError
from sft.models.build import load_model, load_tokenizer


def test_chat_template_from_file(tmp_path):
    f = tmp_path / "t.jinja"
    f.write_text("{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}")
    tok = load_tokenizer(ModelConfig(name_or_path="tiny", chat_template=str(f)))
    assert (
        tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False) == "[user]hi"
    )


def test_chat_template_from_a_model_folder(tmp_path):
    tok = load_tokenizer(ModelConfig(name_or_path="tiny"))
    tok.chat_template = "{{ messages[0]['content'] }}!"
    tok.save_pretrained(tmp_path / "donor")
    (tmp_path / "donor" / "config.json").write_text("{}")
    got = load_tokenizer(ModelConfig(name_or_path="tiny", chat_template=str(tmp_path / "donor")))
    assert got.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False) == "x!"


def test_missing_model_path_is_one_line(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_tokenizer(ModelConfig(name_or_path=str(tmp_path / "nope")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no config.json"):
        load_model(str(tmp_path / "empty"))


def test_training_model_has_no_cache():
    assert load_model("tiny").config.use_cache is False
