"""Every supported row format becomes the same messages; bad rows raise RowError with a reason."""

from __future__ import annotations

import pytest

from sft.data.formats import RowError, detect_format, to_messages

EXPECTED = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]


@pytest.mark.parametrize(
    "row,fmt",
    [
        ({"messages": EXPECTED}, "messages"),
        (
            {"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]},
            "sharegpt",
        ),
        ({"instruction": "Q", "input": "", "output": "A"}, "alpaca"),
        ({"prompt": "Q", "completion": "A"}, "prompt_completion"),
        ({"question": "Q", "answer": "A"}, "prompt_completion"),
    ],
)
def test_formats_agree(row, fmt):
    assert detect_format(row) == fmt
    assert to_messages(row) == EXPECTED
    assert to_messages(row, fmt) == EXPECTED


def test_alpaca_input_and_history():
    row = {"instruction": "Do", "input": "this", "output": "done", "history": [["hi", "hello"]]}
    msgs = to_messages(row)
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant"]
    assert msgs[2]["content"] == "Do\n\nthis"


def test_system_prompt_is_prepended_once():
    msgs = to_messages({"messages": EXPECTED}, system_prompt="Be brief.")
    assert msgs[0] == {"role": "system", "content": "Be brief."}
    msgs = to_messages(
        {"messages": [{"role": "system", "content": "S"}, *EXPECTED]}, system_prompt="X"
    )
    assert msgs[0]["content"] == "S"


@pytest.mark.parametrize(
    "row,reason",
    [
        ({"messages": []}, "empty_conversation"),
        (
            {
                "messages": [
                    {"role": "narrator", "content": "x"},
                    {"role": "assistant", "content": "y"},
                ]
            },
            "unknown_role",
        ),
        ({"messages": [{"role": "user", "content": "only a question"}]}, "no_assistant_turn"),
        (
            {"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "y"}]},
            "non_text_content",
        ),
        ({"messages": [{"role": "user"}]}, "malformed_turn"),
        ({"text": "raw"}, "unknown_format"),
        ({"messages": "hello"}, "malformed_conversation"),
        ({"conversations": {"from": "human"}}, "malformed_conversation"),
        ({"instruction": "q", "output": None}, "non_text_content"),  # not the text "None"
        ({"instruction": "q", "output": 2}, "non_text_content"),  # not the text "2"
        ({"instruction": ["a", "list"], "output": "y"}, "non_text_content"),  # not a crash
        ({"instruction": "q", "input": 5, "output": "y"}, "non_text_content"),
        ({"instruction": "q", "output": "y", "history": [["u", 1]]}, "non_text_content"),
        (
            {"messages": [{"role": "user", "content": " "}, {"role": "assistant", "content": ""}]},
            "empty_conversation",
        ),
    ],
)
def test_bad_rows_have_reasons(row, reason):
    with pytest.raises(RowError) as e:
        to_messages(row)
    assert e.value.reason == reason
