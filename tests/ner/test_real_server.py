"""`sft-ner prompt` through a real OpenAI-compatible server, `transformers serve`, started here on
a free loopback port with a tiny model saved to disk, gives the same generations as the local HF
backend, through /v1/chat/completions and /v1/completions.

The tiny model is random but for one planted rule: after a newline it emits the token
"The given sentence:". The chat template ends with a newline, so every chat reply starts with
that token and the stop "\\nThe given sentence:" matches across the prompt/generation boundary
on a server that checks stops over the prompt too (this one does): the case the client must
catch. The fake server of conftest.py stays for the fault cases.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from sft.ner.readers import Sentence, write_spans_jsonl

from .test_cli import run

pytestmark = pytest.mark.slow

PLANTED = "The given sentence:"
TRAIN = [
    Sentence(["Bob", "visited", "Rome"], [(0, 0, "PER"), (2, 2, "LOC")]),
    Sentence(["Acme", "hired", "Sue", "in", "May"], [(0, 0, "ORG"), (2, 2, "PER")]),
    Sentence(["rain", "fell", "all", "day"], []),
]
TEST = [
    Sentence(["Peter", "met", "Ann"], [(0, 0, "PER"), (2, 2, "PER")]),
    Sentence(["stocks", "fell", "in", "Tokyo", "on", "Monday"], [(3, 3, "LOC")]),
    Sentence(["EU", "rejects", "German", "call"], [(0, 0, "ORG"), (2, 2, "MISC")]),
]


def _serve_command() -> list[str]:
    from transformers.utils.import_utils import is_serve_available

    if not is_serve_available():
        reason = (
            "`transformers serve` is unavailable: it needs the transformers[serving] extra "
            "(fastapi, uvicorn, openai), part of this project's `ner` extra"
        )
        if os.environ.get("SFT_REQUIRE_SERVE") == "1":  # set by .ci/run: CI must run this
            pytest.fail(reason)
        pytest.skip(reason)
    script = Path(sys.executable).with_name("transformers")
    if script.is_file():
        return [str(script), "serve"]
    found = shutil.which("transformers")
    if found:
        return [found, "serve"]
    return [sys.executable, "-m", "transformers.cli.transformers", "serve"]


def _planted_tiny_model(path: Path) -> None:
    """A random tiny Llama with one planted rule: after a newline, the token "The given
    sentence:". Hidden dimension 0 is kept out of everything (embeddings, attention and MLP
    outputs, output rows) but the newline's embedding, where it is huge, and that token's output
    row: the token's logit is 0 everywhere but after a newline, where it dwarfs the rest."""
    import torch

    from sft.models.tiny import build_tiny_model, build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    tok.add_tokens([PLANTED])
    model = build_tiny_model("llama", vocab_size=len(tok), hidden_size=32, seed=0)
    newline = tok.convert_tokens_to_ids("Ċ")  # byte-level "\n"
    planted = tok.convert_tokens_to_ids(PLANTED)
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        emb[:, 0] = 0.0
        emb[newline] = 0.0
        emb[newline, 0] = 1000.0
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[0, :] = 0.0
            layer.mlp.down_proj.weight[0, :] = 0.0
        out = model.get_output_embeddings().weight
        out[:, 0] = 0.0
        out[planted] = 0.0
        out[planted, 0] = 10.0
    model.save_pretrained(path)
    tok.save_pretrained(path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served_model(tmp_path_factory):
    """(base_url, model_dir): `transformers serve` pinned to the planted tiny model, offline."""
    command = _serve_command()
    model_dir = tmp_path_factory.mktemp("served") / "tiny-planted"
    _planted_tiny_model(model_dir)
    log_path = model_dir.parent / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.setdefault("OMP_NUM_THREADS", "1")
    for _attempt in range(3):  # another process may take the free port before the server does
        proc, url = _start(command, model_dir, log_path, env)
        if proc is not None:
            break
    else:
        pytest.fail(f"transformers serve found no free port:\n{log_path.read_text()}")
    try:
        yield url, model_dir
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _start(command, model_dir, log_path, env) -> tuple[subprocess.Popen | None, str]:
    """Start the server and wait for /health; (None, url) when its port was taken."""
    port = _free_port()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [*command, str(model_dir), "--host", "127.0.0.1", "--port", str(port)]
            + ["--device", "cpu", "--dtype", "float32", "--log-level", "warning"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        if proc.poll() is not None:
            text = log_path.read_text()
            if "address already in use" in text.lower():
                return None, url
            pytest.fail(f"transformers serve exited ({proc.returncode}):\n{text}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail(f"transformers serve not up in 180 s:\n{log_path.read_text()}")
        time.sleep(0.5)


@pytest.fixture
def data(tmp_path, monkeypatch):
    d = tmp_path / "data" / "conll2003" / "spans"
    d.mkdir(parents=True)
    write_spans_jsonl(d / "train.jsonl", TRAIN)
    write_spans_jsonl(d / "test.jsonl", TEST)
    monkeypatch.setenv("SFT_DATA_DIR", str(tmp_path / "data"))
    return d


def _prompt(capsys, out: Path, api: str, *backend: str) -> list[dict]:
    argv = ["prompt", "--data", "conll2003", "--n", "0", "--k", "2", "--retrieval", "random"]
    argv += ["--verify", "--api", api, "--threads", "1", "--out", str(out), *backend]
    code, _, err = run(argv, capsys)
    assert code == 0, err
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_real_server_generations_equal_the_local_backend(served_model, data, tmp_path, capsys, api):
    url, model_dir = served_model
    local = _prompt(capsys, tmp_path / "local", api, "--model", str(model_dir))
    served = _prompt(capsys, tmp_path / "served", api, "--base-url", url)
    n = sum(len(r["generated"]) + len(r["verify"]) for r in local)
    assert n == len(TEST) * 4 + sum(len(r["verify"]) for r in local)
    agree = sum(
        a["generated"][t] == b["generated"][t]
        for a, b in zip(local, served)
        for t in a["generated"]
    ) + sum(x == y for a, b in zip(local, served) for x, y in zip(a["verify"], b["verify"]))
    assert agree == n, [(a["generated"], b["generated"]) for a, b in zip(local, served)]
    assert local == served  # every record: spans, generations, answers, stats

    metrics = json.loads((tmp_path / "served" / "metrics.json").read_text())
    assert metrics["settings"]["model_name"] == str(model_dir)  # from GET /v1/models
    usage = metrics["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    generated = [t for r in local for t in r["generated"].values()]
    if api == "chat":
        # The planted rule fired: every reply starts with the stop's tail, the server stopped at
        # once on the stop begun in the prompt, and the client asked again without stops.
        assert all(t.startswith(PLANTED) for t in generated)
        assert any(t != PLANTED for t in generated)
        assert usage["asked_again_without_stop"] == len(TEST) * 4
    else:
        # Completions end in "The labeled sentence:": no straddle, the server's stops stand.
        assert usage["asked_again_without_stop"] < len(TEST) * 4
