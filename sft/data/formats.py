"""Turn a raw row of any supported format into a list of chat messages.

Formats (auto-detected per row from its keys, or declared with `data.format`):
  messages           {"messages": [{"role": "user"|"assistant"|"system", "content": str}, ...]}
  sharegpt           {"conversations": [{"from": "human"|"gpt"|"system", "value": str}, ...]}
  alpaca             {"instruction", "input"?, "output", "history"?: [[user, assistant], ...]}
  prompt_completion  {"prompt", "completion"} (also {"question", "answer"})

Invariant: a row either becomes a non-empty list of messages whose roles are system/user/
assistant and whose contents are strings, or raises `RowError` with a reason key; nothing else.
"""

from __future__ import annotations

from typing import Any

ROLE_MAP = {
    "system": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "model": "assistant",
    "bot": "assistant",
}


class RowError(ValueError):
    """A row that cannot be converted; `reason` is a short key for the bad-data report."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def detect_format(row: dict[str, Any]) -> str:
    if "messages" in row:
        return "messages"
    if "conversations" in row:
        return "sharegpt"
    if "instruction" in row and "output" in row:
        return "alpaca"
    if ("prompt" in row and "completion" in row) or ("question" in row and "answer" in row):
        return "prompt_completion"
    keys = sorted(k for k in row if not k.startswith("_"))
    raise RowError("unknown_format", f"keys {keys}")


def _turns(turns: Any, role_key: str, content_key: str) -> list[dict[str, str]]:
    if turns is not None and not isinstance(turns, list):
        raise RowError(
            "malformed_conversation", f"expected a list of turns, got {type(turns).__name__}"
        )
    if not turns:
        raise RowError("empty_conversation")
    out = []
    for t in turns:
        if not isinstance(t, dict) or role_key not in t or content_key not in t:
            raise RowError("malformed_turn", f"expected {role_key!r} and {content_key!r}")
        role = ROLE_MAP.get(str(t[role_key]).lower())
        if role is None:
            raise RowError("unknown_role", repr(t[role_key]))
        content = t[content_key]
        if not isinstance(content, str):
            raise RowError("non_text_content", type(content).__name__)
        out.append({"role": role, "content": content})
    return out


def _text(value: Any, key: str, optional: bool = False) -> str:
    """A string field; None is "" only where the field is optional (never trains "None")."""
    if value is None and optional:
        return ""
    if not isinstance(value, str):
        raise RowError("non_text_content", f"{key} is {type(value).__name__}, not a string")
    return value


def to_messages(
    row: dict[str, Any], fmt: str = "auto", system_prompt: str | None = None
) -> list[dict[str, str]]:
    """Messages for one row (raises RowError)."""
    fmt = detect_format(row) if fmt == "auto" else fmt
    if fmt == "messages":
        msgs = _turns(row.get("messages"), "role", "content")
    elif fmt == "sharegpt":
        msgs = _turns(row.get("conversations"), "from", "value")
    elif fmt == "alpaca":
        msgs = []
        for pair in row.get("history") or []:
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
                raise RowError("malformed_history")
            msgs += [
                {"role": "user", "content": _text(pair[0], "history")},
                {"role": "assistant", "content": _text(pair[1], "history")},
            ]
        instr = _text(row.get("instruction"), "instruction", optional=True)
        inp = _text(row.get("input"), "input", optional=True)
        user = f"{instr}\n\n{inp}" if inp else instr
        msgs += [
            {"role": "user", "content": user},
            {"role": "assistant", "content": _text(row.get("output"), "output")},
        ]
        if row.get("system"):
            msgs.insert(0, {"role": "system", "content": _text(row["system"], "system")})
    elif fmt == "prompt_completion":
        prompt = row.get("prompt", row.get("question"))
        completion = row.get("completion", row.get("answer"))
        if not isinstance(prompt, str) or not isinstance(completion, str):
            raise RowError("non_text_content", "prompt/completion must be strings")
        msgs = [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
    else:
        raise RowError("unknown_format", fmt)
    if not msgs or all(not m["content"].strip() for m in msgs):
        raise RowError("empty_conversation")
    if not any(m["role"] == "assistant" for m in msgs):
        raise RowError("no_assistant_turn")
    if system_prompt and msgs[0]["role"] != "system":
        msgs.insert(0, {"role": "system", "content": system_prompt})
    return msgs
