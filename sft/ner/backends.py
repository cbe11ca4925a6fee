"""Text generation backends for GPT-NER: a local HF causal LM, or an OpenAI-compatible server.

`HFBackend`: greedy decoding in batches with left padding (prompts sorted by length to waste
little padding, outputs returned in input order); the prompt goes through the tokenizer's chat
template as one user turn when the tokenizer has one, else it is used as plain text.
`OpenAIBackend`: POSTs to `<base_url>/v1/chat/completions` (one request per prompt) or
`<base_url>/v1/completions` (prompts batched in one request), temperature 0, via `urllib`; the
API key is read from an environment variable only and is sent in the Authorization header,
never logged or put in an error message.

Invariant: `generate(prompts, max_new_tokens, stop)` returns one string per prompt, in order,
holding only the newly generated text, cut before the first stop string.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from sft.errors import UserError


class Backend(Protocol):
    def generate(
        self, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str] = ()
    ) -> list[str]: ...


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    cut = len(text)
    for s in stop:
        if s:
            i = text.find(s)
            if i != -1:
                cut = min(cut, i)
    return text[:cut]


class HFBackend:
    def __init__(
        self, model, tokenizer, batch_size: int = 8, use_chat_template: bool | None = None
    ) -> None:
        self.model, self.tokenizer, self.batch_size = model.eval(), tokenizer, batch_size
        if use_chat_template is None:
            use_chat_template = bool(getattr(tokenizer, "chat_template", None))
        self.use_chat_template = use_chat_template
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token

    @classmethod
    def from_pretrained(cls, path: str, batch_size: int = 8, dtype: str = "float32") -> HFBackend:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if not os.path.isdir(path):
            raise UserError(f"model directory {path} not found; pass a local HF model directory")
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
        return cls(model, tok, batch_size=batch_size)

    def render(self, prompt: str) -> str:
        if self.use_chat_template:
            return self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
        return prompt

    def generate(
        self, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str] = ()
    ) -> list[str]:
        import torch

        texts = [self.render(p) for p in prompts]
        ids = [
            self.tokenizer(t, add_special_tokens=not self.use_chat_template)["input_ids"]
            for t in texts
        ]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out: list[str] = [""] * len(ids)
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
                text = self.tokenizer.decode(gen[row, width:], skip_special_tokens=True)
                out[i] = cut_at_stop(text, stop)
        return out

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


class OpenAIBackend:
    def __init__(
        self,
        base_url: str,
        model: str,
        api: str = "chat",
        api_key_env: str = "OPENAI_API_KEY",
        timeout_s: float = 120.0,
        max_retries: int = 3,
        workers: int = 4,
        batch_size: int = 16,
        backoff_s: float = 0.5,
    ) -> None:
        if api not in ("chat", "completions"):
            raise UserError(f"api={api!r}: choose 'chat' or 'completions'")
        root = base_url.rstrip("/")
        if not root.endswith("/v1"):
            root += "/v1"
        self.url = root + ("/chat/completions" if api == "chat" else "/completions")
        self.model, self.api, self.api_key_env = model, api, api_key_env
        self.timeout_s, self.max_retries = timeout_s, max_retries
        self.workers, self.batch_size, self.backoff_s = workers, batch_size, backoff_s

    def generate(
        self, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str] = ()
    ) -> list[str]:
        stop = [s for s in stop if s]
        if self.api == "completions":
            out: list[str] = []
            for b in range(0, len(prompts), self.batch_size):
                out += self._completions(
                    list(prompts[b : b + self.batch_size]), max_new_tokens, stop
                )
        else:
            with ThreadPoolExecutor(max_workers=self.workers) as pool:
                out = list(pool.map(lambda p: self._chat(p, max_new_tokens, stop), prompts))
        return [cut_at_stop(t, stop) for t in out]

    def _chat(self, prompt: str, max_new_tokens: int, stop: list[str]) -> str:
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_new_tokens,
            "temperature": 0,
        }
        if stop:
            body["stop"] = stop
        reply = self._post(body)
        try:
            return reply["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise UserError(f"{self.url}: reply has no choices[0].message.content") from None

    def _completions(self, prompts: list[str], max_new_tokens: int, stop: list[str]) -> list[str]:
        body = {
            "model": self.model,
            "prompt": prompts,
            "max_tokens": max_new_tokens,
            "temperature": 0,
        }
        if stop:
            body["stop"] = stop
        reply = self._post(body)
        try:
            choices = sorted(reply["choices"], key=lambda c: c.get("index", 0))
            texts = [c["text"] for c in choices]
        except (KeyError, TypeError):
            raise UserError(f"{self.url}: reply has no choices[].text") from None
        if len(texts) != len(prompts):
            raise UserError(f"{self.url}: {len(texts)} choices for {len(prompts)} prompts")
        return texts

    def _post(self, body: dict) -> dict:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        data = json.dumps(body).encode()
        for attempt in range(self.max_retries + 1):
            request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:
                    return json.loads(resp.read().decode("utf-8"))
            except urllib.error.HTTPError as e:
                retry = e.code == 429 or e.code >= 500
                if not retry or attempt == self.max_retries:
                    detail = e.read().decode("utf-8", "replace")[:200].replace("\n", " ")
                    hint = f" (is ${self.api_key_env} set?)" if e.code in (401, 403) else ""
                    raise UserError(f"{self.url}: HTTP {e.code}{hint}: {detail}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                if attempt == self.max_retries:
                    reason = getattr(e, "reason", e)
                    raise UserError(f"{self.url}: cannot reach the server ({reason})") from None
            except json.JSONDecodeError:
                raise UserError(f"{self.url}: the reply is not JSON") from None
            time.sleep(min(self.backoff_s * 2**attempt, 8.0))
        raise AssertionError("unreachable")
