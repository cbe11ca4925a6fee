"""Text generation backends for GPT-NER: a local HF causal LM, or an OpenAI-compatible server.

`HFBackend`: greedy decoding in batches with left padding (prompts sorted by length to waste
little padding, outputs returned in input order). With `use_chat_template` (the default when the
tokenizer has a template; what `--api chat` means locally) the prompt goes through the chat
template as one user turn; without it (`--api completions`) the prompt is used as plain text.
`OpenAIBackend`: POSTs one request per prompt, `concurrency` at a time, to
`<base_url>/v1/chat/completions` (the prompt as one user message) or `<base_url>/v1/completions`
(`prompt` as a string: what the OpenAI API and every server accept), temperature 0, via
`urllib`, retrying 429/5xx, timeouts, dropped connections and broken JSON. With no model name
it asks `GET /v1/models` and takes the first id. Token usage reported by the server is summed in
`usage`. The API key is read from an environment variable only and is sent in the Authorization
header, never logged or put in an error message.

Stops: a stop string counts only where it lies wholly inside the generated text. The local
backend decodes the new tokens only and cuts there. A server may check its stop strings over
the prompt's tokens too (`transformers serve` does: with a chat template ending in a newline,
`"\\nThe given sentence:"` fires as soon as the reply starts with `The given sentence:`), so a
reply that could be such a straddling match (it stopped, holds no whole stop, and starts with a
tail of a stop or is empty) is asked again without server-side stops and cut on the client.

Invariant: `generate(prompts, max_new_tokens, stop)` returns one string per prompt, in order,
holding only the newly generated text, cut before the first stop string that lies wholly inside
it; for a deterministic server serving the same weights and template as the local model, the
same strings as `HFBackend`. `generate_each` yields the same `(index, text)` pairs as each one
finishes, so a caller can keep what finished before a failure.
"""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import CancelledError, ThreadPoolExecutor, as_completed
from threading import Lock
from typing import Protocol

from sft.errors import UserError

MAX_SERVER_STOPS = 4  # the OpenAI API's limit


class Backend(Protocol):
    def generate(
        self, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str] = ()
    ) -> list[str]: ...


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """`text` before the earliest stop string in it."""
    return text[: min((i for s in stop if s and (i := text.find(s)) != -1), default=len(text))]


def may_straddle(text: str, stop: Sequence[str]) -> bool:
    """Could a server have stopped on a stop string that began in the prompt? Then the reply is
    a tail `s[j:]` (j >= 1) of a stop `s`, plus what the last token ran over, or empty (a server
    that strips the matched stop from its reply)."""
    head = text.lstrip()
    if not head:
        return True
    for s in stop:
        for j in range(1, len(s)):
            tail = s[j:].lstrip()
            if tail and head.startswith(tail):
                return True
    return False


def server_stops(stop: Sequence[str]) -> list[str]:
    """The stops a server may apply: none when one stop holds another (a server stops at the
    inner one, before the outer, earlier-starting one is complete) or when there are too many."""
    stop = [s for s in dict.fromkeys(stop) if s]
    nested = any(a != b and a in b for a in stop for b in stop)
    return [] if nested or len(stop) > MAX_SERVER_STOPS else stop


class HFBackend:
    def __init__(
        self,
        model,
        tokenizer,
        batch_size: int = 8,
        use_chat_template: bool | None = None,
        name: str | None = None,
        weights: str = "",
    ) -> None:
        self.model, self.tokenizer, self.batch_size = model.eval(), tokenizer, batch_size
        if use_chat_template is None:
            use_chat_template = bool(getattr(tokenizer, "chat_template", None))
        self.use_chat_template = use_chat_template
        self.name = name or str(getattr(model.config, "_name_or_path", "") or "model")
        self.weights = weights  # a signature of the weight files: a retrained model is new
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.usage = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}

    @classmethod
    def from_pretrained(
        cls,
        path: str,
        batch_size: int = 8,
        dtype: str = "float32",
        use_chat_template: bool | None = None,
    ) -> HFBackend:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if not os.path.isdir(path):
            raise UserError(f"model directory {path} not found; pass a local HF model directory")
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
        return cls(
            model,
            tok,
            batch_size=batch_size,
            use_chat_template=use_chat_template,
            name=os.path.abspath(path),
            weights=weights_signature(path),
        )

    def identity(self) -> dict:
        """What decides the outputs besides the prompt (part of every generation-cache key)."""
        return {
            "backend": "hf",
            "model": self.name,
            "weights": self.weights,
            "chat_template": self.use_chat_template,
        }

    def render(self, prompt: str) -> str:
        if self.use_chat_template:
            return self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
        return prompt

    def generate(
        self, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str] = ()
    ) -> list[str]:
        out: list[str] = [""] * len(prompts)
        for i, text in self.generate_each(prompts, max_new_tokens, stop):
            out[i] = text
        return out

    def generate_each(
        self, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str] = ()
    ) -> Iterator[tuple[int, str]]:
        import torch

        texts = [self.render(p) for p in prompts]
        ids = [
            self.tokenizer(t, add_special_tokens=not self.use_chat_template)["input_ids"]
            for t in texts
        ]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        pad = self.tokenizer.pad_token_id
        device = next(self.model.parameters()).device
        eos = self._eos_ids()
        for b in range(0, len(order), self.batch_size):
            chunk = order[b : b + self.batch_size]
            width = max(len(ids[i]) for i in chunk)
            input_ids = torch.tensor(
                [[pad] * (width - len(ids[i])) + ids[i] for i in chunk], device=device
            )
            mask = torch.tensor(
                [[0] * (width - len(ids[i])) + [1] * len(ids[i]) for i in chunk], device=device
            )
            with torch.no_grad():
                gen = self.model.generate(
                    input_ids=input_ids,
                    attention_mask=mask,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=pad,
                    eos_token_id=eos,
                    use_cache=True,
                )
            for row, i in enumerate(chunk):
                new = gen[row, width:].tolist()
                self.usage["requests"] += 1
                self.usage["prompt_tokens"] += len(ids[i])
                self.usage["completion_tokens"] += _until_eos(new, eos)
                text = self.tokenizer.decode(new, skip_special_tokens=True)
                yield i, cut_at_stop(text, stop)

    def _eos_ids(self) -> list[int]:
        ids = set()
        for source in (
            getattr(self.model.generation_config, "eos_token_id", None),
            self.tokenizer.eos_token_id,
        ):
            if isinstance(source, int):
                ids.add(source)
            elif source:
                ids.update(source)
        return sorted(ids)


def weights_signature(path: str) -> str:
    """Hash of the names, sizes and modification times of a model directory's weight, config
    and tokenizer files: cheap, and different once the model is retrained or replaced."""
    import hashlib

    parts = []
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        if entry.is_file() and entry.name.endswith((".safetensors", ".bin", ".json", ".jinja")):
            st = entry.stat()
            parts.append(f"{entry.name}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _until_eos(new: list[int], eos: list[int]) -> int:
    """Generated tokens up to and including the first end-of-sequence token (padding after)."""
    for n, t in enumerate(new):
        if t in eos:
            return n + 1
    return len(new)


class OpenAIBackend:
    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        api: str = "chat",
        api_key_env: str = "OPENAI_API_KEY",
        timeout_s: float = 120.0,
        max_retries: int = 3,
        concurrency: int = 4,
        backoff_s: float = 0.5,
        server_stop: bool = True,
    ) -> None:
        if api not in ("chat", "completions"):
            raise UserError(f"api={api!r}: choose 'chat' or 'completions'")
        if timeout_s <= 0 or max_retries < 0 or concurrency < 1:
            raise UserError("timeout must be > 0, retries >= 0 and concurrency >= 1")
        root = base_url.rstrip("/")
        if not root.endswith("/v1"):
            root += "/v1"
        self.root = root
        self.url = root + ("/chat/completions" if api == "chat" else "/completions")
        self._model, self.api, self.api_key_env = model, api, api_key_env
        self.timeout_s, self.max_retries = timeout_s, max_retries
        self.concurrency, self.backoff_s, self.server_stop = concurrency, backoff_s, server_stop
        self.usage = {
            "requests": 0,
            "retries": 0,
            "asked_again_without_stop": 0,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "total_tokens": 0,
        }
        self._lock = Lock()

    @property
    def model(self) -> str:
        """The model id sent with every request: the one given, else the server's first."""
        if self._model is None:
            reply = self._request(self.root + "/models", None)
            try:
                ids = [m["id"] for m in reply["data"] if m.get("id")]
            except (KeyError, TypeError, AttributeError):
                raise UserError(f"{self.root}/models: reply has no data[].id") from None
            if not ids:
                raise UserError(
                    f"{self.root}/models lists no model; pass the model id with --model-name"
                )
            self._model = str(ids[0])
        return self._model

    def identity(self) -> dict:
        return {"backend": "openai", "api": self.api, "model": self.model}

    def generate(
        self, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str] = ()
    ) -> list[str]:
        out: list[str] = [""] * len(prompts)
        for i, text in self.generate_each(prompts, max_new_tokens, stop):
            out[i] = text
        return out

    def generate_each(
        self, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str] = ()
    ) -> Iterator[tuple[int, str]]:
        stop = [s for s in stop if s]
        if not prompts:
            return
        self.model  # noqa: B018 - resolve the id once, before the workers start
        error: Exception | None = None
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(prompts))) as pool:
            futures = {
                pool.submit(self._one, p, max_new_tokens, stop): i for i, p in enumerate(prompts)
            }
            for fut in as_completed(futures):
                try:
                    text = fut.result()
                except CancelledError:
                    continue
                except Exception as e:  # noqa: BLE001 - re-raised once the rest finished
                    if error is None:
                        error = e
                        for f in futures:
                            f.cancel()
                    continue
                yield futures[fut], text
        if error is not None:
            raise error

    def _one(self, prompt: str, max_new_tokens: int, stop: list[str]) -> str:
        sent = server_stops(stop) if self.server_stop else []
        text, finish = self._generate_one(prompt, max_new_tokens, sent)
        stopped = sent and finish != "length" and cut_at_stop(text, stop) == text
        if stopped and may_straddle(text, sent):  # perhaps on a stop begun in the prompt
            self._count("asked_again_without_stop", 1)
            text, _ = self._generate_one(prompt, max_new_tokens, [])
        return cut_at_stop(text, stop)

    def _generate_one(
        self, prompt: str, max_new_tokens: int, stop: list[str]
    ) -> tuple[str, str | None]:
        body: dict = {"model": self.model, "max_tokens": max_new_tokens, "temperature": 0}
        if self.api == "chat":
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        if stop:
            body["stop"] = stop
        reply = self._request(self.url, body)
        try:
            choice = reply["choices"][0]
            if self.api == "chat":
                text = choice["message"]["content"] or ""
            else:
                text = choice["text"] or ""
        except (KeyError, IndexError, TypeError):
            field = "message.content" if self.api == "chat" else "text"
            raise UserError(f"{self.url}: reply has no choices[0].{field}") from None
        usage = reply.get("usage") if isinstance(reply, dict) else None
        if isinstance(usage, dict):
            for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
                if isinstance(usage.get(key), int):
                    self._count(key, usage[key])
        return str(text), choice.get("finish_reason") if isinstance(choice, dict) else None

    def _count(self, key: str, n: int) -> None:
        with self._lock:
            self.usage[key] += n

    def _request(self, url: str, body: dict | None) -> dict:
        """GET (no body) or POST JSON; retries what may pass, raises `UserError` otherwise."""
        headers = {"Content-Type": "application/json"} if body is not None else {}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        data = json.dumps(body).encode() if body is not None else None
        method = "POST" if body is not None else "GET"
        for attempt in range(self.max_retries + 1):
            if attempt:
                self._count("retries", 1)
            self._count("requests", 1)
            request = urllib.request.Request(url, data=data, headers=headers, method=method)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:
                    reply = json.loads(resp.read().decode("utf-8"))
                if not isinstance(reply, dict):
                    raise json.JSONDecodeError("not an object", "", 0)
                return reply
            except urllib.error.HTTPError as e:
                retry = e.code in (408, 429) or e.code >= 500
                if not retry or attempt == self.max_retries:
                    detail = e.read().decode("utf-8", "replace")[:200].replace("\n", " ")
                    hint = f" (is ${self.api_key_env} set?)" if e.code in (401, 403) else ""
                    raise UserError(f"{url}: HTTP {e.code}{hint}: {detail}") from None
            except (
                urllib.error.URLError,
                TimeoutError,
                ConnectionError,
                http.client.HTTPException,
            ) as e:
                if attempt == self.max_retries:
                    reason = getattr(e, "reason", None) or type(e).__name__
                    raise UserError(
                        f"{url}: cannot reach the server ({reason}) after "
                        f"{attempt + 1} tries of {self.timeout_s:g} s at most"
                    ) from None
            except (json.JSONDecodeError, UnicodeDecodeError):
                if attempt == self.max_retries:
                    raise UserError(
                        f"{url}: the reply is not a JSON object (after {attempt + 1} tries)"
                    ) from None
            time.sleep(min(self.backoff_s * 2**attempt, 8.0))
        raise AssertionError("unreachable")
