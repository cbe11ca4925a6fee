"""Labels come from the tokenizer's own chat template and cover exactly the assistant turns."""

from __future__ import annotations

import numpy as np
import pytest

from sft.data.tokenize import tokenize_conversation

CONV = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "4"},
    {"role": "user", "content": "and 3+3?"},
    {"role": "assistant", "content": "six, i.e. 6"},
]


def _trained_text(tok, ids, mask):
    return tok.decode(ids[mask])


def test_ids_are_the_rendered_conversation(tiny_tokenizer):
    ids, mask = tokenize_conversation(tiny_tokenizer, CONV)
    rendered = tiny_tokenizer.apply_chat_template(CONV, tokenize=False)
    assert tiny_tokenizer.decode(ids) == rendered
    assert ids.dtype == np.int32 and mask.dtype == bool and len(ids) == len(mask)


def test_assistant_turns_are_trained_with_end_of_turn(tiny_tokenizer):
    ids, mask = tokenize_conversation(tiny_tokenizer, CONV, "assistant")
    assert _trained_text(tiny_tokenizer, ids, mask) == "4<|im_end|>six, i.e. 6<|im_end|>"


def test_last_assistant_only(tiny_tokenizer):
    ids, mask = tokenize_conversation(tiny_tokenizer, CONV, "last_assistant")
    assert _trained_text(tiny_tokenizer, ids, mask) == "six, i.e. 6<|im_end|>"


def test_train_on_all(tiny_tokenizer):
    _, mask = tokenize_conversation(tiny_tokenizer, CONV, "all")
    assert mask.all()


def test_user_text_is_never_trained(tiny_tokenizer):
    ids, mask = tokenize_conversation(tiny_tokenizer, CONV)
    assert "2+2?" not in _trained_text(tiny_tokenizer, ids, mask)
    assert "2+2?" in tiny_tokenizer.decode(ids[~mask])


def test_real_smollm2_template_if_cached():
    from pathlib import Path

    from sft.models.smollm2 import cache_root

    d = cache_root() / "models" / "SmolLM2-135M-Instruct"
    if not (Path(d) / "tokenizer.json").exists():
        pytest.skip("SmolLM2 not cached on this machine (make demo fetches it)")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(d)
    ids, mask = tokenize_conversation(
        tok, CONV[1:]
    )  # no system turn: the template adds its default one
    assert tok.decode(ids[mask]) == "4<|im_end|>six, i.e. 6<|im_end|>"
