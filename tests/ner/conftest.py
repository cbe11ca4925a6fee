"""Shared NER test fixtures: the shipped data (skipped when absent), a tiny HF model, and a real
OpenAI-compatible HTTP server on 127.0.0.1 that answers like a simple rule-based labeler."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def data_file(*parts: str) -> Path:
    path = DATA.joinpath(*parts)
    if not path.is_file():
        pytest.skip(f"shared data not available ({path})")
    return path


@pytest.fixture(scope="session")
def tiny():
    from sft.models.tiny import build_tiny_model, build_tiny_tokenizer

    return build_tiny_model("llama", hidden_size=32, seed=0), build_tiny_tokenizer()


def capitalized_runs(words: list[str]) -> list[tuple[int, int]]:
    """The fake labeler's notion of an entity: a maximal run of capitalized words."""
    spans, start = [], None
    for i, w in enumerate(words + ["x"]):
        if w[:1].isupper():
            start = i if start is None else start
        elif start is not None:
            spans.append((start, i - 1))
            start = None
    return spans


def fake_answer(prompt: str) -> str:
    """Deterministic reply to a GPT-NER prompt: capitalized runs are entities, verification says
    yes to capitalized words; all-types prompts get the first listed label."""
    question = re.findall(r'Is the word "(.*)" in the given sentence', prompt)
    if question:
        return "yes" if question[-1][:1].isupper() else "no"
    given = re.findall(r"The given sentence: (.*)", prompt)
    if not given:
        return prompt
    words = given[-1].split()
    spans = capitalized_runs(words)
    label = re.search(r"^- (\S+) \(", prompt, re.MULTILINE)
    out = list(words)
    for s, e in spans:
        out[s] = "@@" + out[s]
        out[e] = out[e] + "##" + (label.group(1) if label else "")
    return " ".join(out)


def stop_over_prompt(tail: str, text: str, stop: list[str]) -> str:
    """What a server that checks stops over prompt and reply together returns: the reply up to
    the end of the first stop found in `tail + text` (so a stop may begin in the prompt)."""
    full = tail + text
    ends = [full.find(s) + len(s) for s in stop if s and full.find(s) != -1]
    if not ends:
        return text
    return full[len(tail) : max(min(ends), len(tail))]


class FakeLLM(BaseHTTPRequestHandler):
    server: ThreadingHTTPServer

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        state = self.server.state
        state["requests"].append({"path": self.path, "auth": None, "body": None})
        if self.path == "/v1/models":
            return self._send(200, {"object": "list", "data": [{"id": m} for m in state["models"]]})
        return self._send(404, {"error": "no such route"})

    def do_POST(self) -> None:
        state = self.server.state
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        state["requests"].append(
            {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
        )
        with state["lock"]:
            served = state["served"]
            if state["die_after"] is not None and served >= state["die_after"]:
                self.close_connection = True  # a dead server: the connection drops, no reply
                return
            fail = state["fail_first"] > 0
            state["fail_first"] -= fail
            broken = not fail and state["broken_first"] > 0
            state["broken_first"] -= broken
            slow = not fail and not broken and state["slow_first"] > 0
            state["slow_first"] -= slow
        if fail:
            return self._send(state["fail_code"], {"error": "busy"})
        if state["key"] and self.headers.get("Authorization") != f"Bearer {state['key']}":
            return self._send(401, {"error": "bad key"})
        if broken:
            return self._send_raw(200, b'{"choices": [{"index": 0, "mess')
        if slow:
            time.sleep(state["slow_s"])
        if self.path == "/v1/chat/completions":
            prompt = body["messages"][-1]["content"]
        elif self.path == "/v1/completions":
            if not isinstance(body["prompt"], str):  # as `transformers serve` answers
                return self._send(400, {"detail": "prompt must be a string."})
            prompt = body["prompt"]
        else:
            return self._send(404, {"error": "no such route"})
        text = fake_answer(prompt)
        if "Is the word" not in prompt:
            text = state["reply_prefix"] + text
        if self.path == "/v1/completions":
            text = " " + text
        stop = body.get("stop") or []
        cut = stop_over_prompt(state["prompt_tail"], text, stop)
        finish = "stop" if cut != text or len(text.split()) < body["max_tokens"] else "length"
        usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": len(cut.split())}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        with state["lock"]:
            state["served"] += 1
        if self.path == "/v1/chat/completions":
            choice = {"index": 0, "message": {"role": "assistant", "content": cut}}
        else:
            choice = {"index": 0, "text": cut}
        return self._send(200, {"choices": [{**choice, "finish_reason": finish}], "usage": usage})

    def _send(self, code: int, payload: dict) -> None:
        self._send_raw(code, json.dumps(payload).encode())

    def _send_raw(self, code: int, data: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def llm_server():
    """Yields (base_url, state). state: key (required API key or None); fail_first replies of
    HTTP fail_code; broken_first replies of truncated JSON; slow_first replies after slow_s
    seconds; die_after (drop every connection once that many prompts were answered); models
    (GET /v1/models); reply_prefix (put before every extraction reply); prompt_tail (the end of
    the prompt as the server sees it, over which stops are checked too); served; requests."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeLLM)
    server.state = {
        "key": None,
        "fail_first": 0,
        "fail_code": 503,
        "broken_first": 0,
        "slow_first": 0,
        "slow_s": 0.0,
        "die_after": None,
        "models": ["fake-model"],
        "reply_prefix": "",
        "prompt_tail": "",
        "served": 0,
        "requests": [],
        "lock": threading.Lock(),
    }
    server.handle_error = lambda request, address: None  # a client that gave up: not news
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
