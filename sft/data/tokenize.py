"""Render a conversation with the tokenizer's own chat template into ids and a trained-token mask.

The conversation is rendered once as text; the character span of every assistant turn (its
content and the template's end-of-turn text) is found by rendering the prefix up to that turn
with `add_generation_prompt=True`, and tokens are labelled through the fast tokenizer's offsets.
So labels follow the real template, whatever it is, with no hand-kept template.

Invariant: `ids` is exactly the tokenization of the rendered conversation; `mask[i]` is True iff
token i lies inside a trained span (`train_on`: every assistant turn, only the last one, or all
tokens); decoding the masked tokens gives back the assistant texts (checked in tests).
"""

from __future__ import annotations

import numpy as np

from sft.data.formats import RowError


def _render(tokenizer, messages, add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )


def assistant_char_spans(
    tokenizer, messages: list[dict[str, str]], train_on: str = "assistant"
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered text and the character spans to train on."""
    text = _render(tokenizer, messages)
    if train_on == "all":
        return text, [(0, len(text))]
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prefix = _render(tokenizer, messages[:i], add_generation_prompt=True) if i else ""
        upto = _render(tokenizer, messages[: i + 1])
        if not (text.startswith(prefix) and text.startswith(upto) and len(upto) >= len(prefix)):
            raise RowError(
                "template_not_prefix_stable",
                "the chat template renders a prefix differently from the full conversation",
            )
        turn = text[len(prefix) : len(upto)]
        spans.append(
            (len(prefix), len(prefix) + len(turn.rstrip()))
        )  # end-of-turn token, not the newline
    if train_on == "last_assistant":
        spans = spans[-1:]
    return text, spans


def tokenize_conversation(
    tokenizer, messages: list[dict[str, str]], train_on: str = "assistant"
) -> tuple[np.ndarray, np.ndarray]:
    """(ids int32, mask bool) for one conversation."""
    text, spans = assistant_char_spans(tokenizer, messages, train_on)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = np.asarray(enc["input_ids"], dtype=np.int32)
    offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
    mask = np.zeros(len(ids), dtype=bool)
    for a, b in spans:
        # a token is trained when it starts inside the span (end-of-turn tokens included)
        mask |= (offsets[:, 0] >= a) & (offsets[:, 0] < b) & (offsets[:, 1] > offsets[:, 0])
    return ids, mask
