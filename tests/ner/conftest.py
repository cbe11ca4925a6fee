"""Shared NER test fixtures: the shipped data (skipped when absent), a tiny HF model, and a real
OpenAI-compatible HTTP server on 127.0.0.1 that answers like a simple rule-based labeler."""

from __future__ import annotations

import json
import re
import threading
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
    words = re.findall(r"The given sentence: (.*)", prompt)[-1].split()
    spans = capitalized_runs(words)
    label = re.search(r"^- (\S+) \(", prompt, re.MULTILINE)
    out = list(words)
    for s, e in spans:
        out[s] = "@@" + out[s]
        out[e] = out[e] + "##" + (label.group(1) if label else "")
    return " ".join(out)


class FakeLLM(BaseHTTPRequestHandler):
    server: ThreadingHTTPServer

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_POST(self) -> None:
        state = self.server.state
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        state["requests"].append(
            {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
        )
        if state["fail_first"] > 0:
            state["fail_first"] -= 1
            return self._send(503, {"error": "busy"})
        if state["key"] and self.headers.get("Authorization") != f"Bearer {state['key']}":
            return self._send(401, {"error": "bad key"})
        if self.path == "/v1/chat/completions":
            text = fake_answer(body["messages"][-1]["content"])
            return self._send(
                200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}
            )
        if self.path == "/v1/completions":
            prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
            choices = [{"index": i, "text": " " + fake_answer(p)} for i, p in enumerate(prompts)]
            return self._send(200, {"choices": choices[::-1]})  # out of order on purpose
        return self._send(404, {"error": "no such route"})

    def _send(self, code: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def llm_server():
    """Yields (base_url, state); state: key (required API key or None), fail_first, requests."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeLLM)
    server.state = {"key": None, "fail_first": 0, "requests": []}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
