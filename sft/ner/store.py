"""Durable state of a GPT-NER run: a generation cache, the prompts sent, and a resumable log of
finished sentences.

`GenerationCache`: a JSONL file of generations keyed by a hash of (backend identity: kind,
model, chat template or API; prompt; max_new_tokens; stop strings; greedy decoding). Each new
generation is appended and flushed the moment it finishes. `CachedBackend` wraps a backend with
it: a prompt seen before costs nothing, the others go to the backend; every prompt the run asks
is logged to `prompts.jsonl` exactly as handed to the backend, with its key and whether it came
from the cache (the cache holds the reply). `RunLog`: the run's
`predictions.jsonl`, appended and flushed one finished sentence at a time, plus `run.json`, the
settings that decide the records; reopened with the same settings it hands back the finished
records so the run resumes, with other settings it starts the log afresh (the cache stays).

Invariant: whatever is on disk after a crash or a kill (a half-written last line included) is
readable: a broken line is skipped, never fatal, and the next append starts on a fresh line;
a cached text is exactly what the wrapped backend returned for the same key.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO

from sft.errors import UserError


def generation_key(identity: dict, prompt: str, max_new_tokens: int, stop: Sequence[str]) -> str:
    blob = json.dumps(
        {
            "id": identity,
            "prompt": prompt,
            "max_new_tokens": max_new_tokens,
            "stop": list(stop),
            "decoding": "greedy",
        },
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def backend_identity(backend) -> dict:
    """What decides a backend's outputs besides the prompt (its `identity()`, else its class)."""
    ident = getattr(backend, "identity", None)
    return ident() if ident else {"backend": type(backend).__name__}


def read_jsonl_lenient(path: Path) -> Iterator[dict]:
    """The JSON object lines of `path`; lines that do not parse (a kill mid-write) are skipped."""
    if not path.is_file():
        return
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                yield row


def open_append(path: Path) -> IO[str]:
    """Open for appending; if the file ends mid-line (a kill mid-write), start a new line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ragged = False
    if path.is_file() and path.stat().st_size:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            ragged = f.read(1) != b"\n"
    f = open(path, "a", encoding="utf-8")  # noqa: SIM115 - the caller closes it
    if ragged:
        f.write("\n")
    return f


class GenerationCache:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.texts: dict[str, str] = {}
        for row in read_jsonl_lenient(self.path):
            if isinstance(row.get("key"), str) and isinstance(row.get("text"), str):
                self.texts[row["key"]] = row["text"]
        self._file: IO[str] | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def get(self, key: str) -> str | None:
        return self.texts.get(key)

    def put(self, key: str, text: str, record: dict) -> None:
        if self._file is None:
            self._file = open_append(self.path)
        self.texts[key] = text
        self._file.write(json.dumps({"key": key, **record, "text": text}, ensure_ascii=False))
        self._file.write("\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class CachedBackend:
    """A backend whose generations go through a `GenerationCache`; counts hits and misses."""

    def __init__(self, backend, cache: GenerationCache, prompts_log: Path | None = None) -> None:
        self.backend, self.cache, self.prompts_log = backend, cache, prompts_log
        self.hits = self.misses = 0
        self._log: IO[str] | None = None
        self._identity: dict | None = None

    @property
    def identity(self) -> dict:
        if self._identity is None:
            self._identity = backend_identity(self.backend)
        return self._identity

    def generate(
        self, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str] = ()
    ) -> list[str]:
        stop = list(stop)
        keys = [generation_key(self.identity, p, max_new_tokens, stop) for p in prompts]
        out: list[str | None] = [self.cache.get(k) for k in keys]
        todo: dict[str, int] = {}  # key -> first prompt index that needs it
        for i, (k, text) in enumerate(zip(keys, out)):
            if text is None and k not in todo:
                todo[k] = i
        self.hits += len(prompts) - len(todo)  # a repeat within the call counts as a hit
        self._log_prompts(prompts, keys, [t is not None for t in out], max_new_tokens, stop)
        if todo:
            firsts = list(todo.values())
            sent = [prompts[i] for i in firsts]
            each = getattr(self.backend, "generate_each", None)
            pairs = (
                each(sent, max_new_tokens, stop)
                if each
                else enumerate(self.backend.generate(sent, max_new_tokens, stop))
            )
            for j, text in pairs:
                i = firsts[j]
                self.misses += 1
                self.cache.put(
                    keys[i],
                    text,
                    {"id": self.identity, "max_new_tokens": max_new_tokens, "stop": stop},
                )
            for i, k in enumerate(keys):
                out[i] = self.cache.get(k)
        return [t if t is not None else "" for t in out]

    def _log_prompts(self, prompts, keys, cached, max_new_tokens, stop) -> None:
        if self.prompts_log is None or not prompts:
            return
        if self._log is None:
            self._log = open_append(self.prompts_log)
        for prompt, key, hit in zip(prompts, keys, cached):
            row = {"key": key, "cached": hit, "max_new_tokens": max_new_tokens, "stop": stop}
            self._log.write(json.dumps({**row, "prompt": prompt}, ensure_ascii=False) + "\n")
        self._log.flush()

    def close(self) -> None:
        self.cache.close()
        if self._log is not None:
            self._log.close()
            self._log = None


class RunLog:
    """`predictions.jsonl` written as sentences finish, resumable under the same settings."""

    def __init__(self, out: Path, prefix: str, settings: dict, fresh: bool = False) -> None:
        self.path = out / f"{prefix}predictions.jsonl"
        self.run_file = out / f"{prefix}run.json"
        self.prompts_path = out / f"{prefix}prompts.jsonl"
        self.settings = json.loads(json.dumps(settings, default=str))  # as it reads back
        self.changed: list[str] = []
        previous = self._previous_settings()
        same = previous is not None and previous == self.settings
        if previous is not None and not same:
            self.changed = sorted(
                k
                for k in set(previous) | set(self.settings)
                if previous.get(k) != self.settings.get(k)
            )
        self.done: dict[int, dict] = {}
        if same and not fresh:
            for row in read_jsonl_lenient(self.path):
                if isinstance(row.get("index"), int) and isinstance(row.get("tokens"), list):
                    self.done[row["index"]] = row
        else:
            out.mkdir(parents=True, exist_ok=True)
            for p in (self.path, self.prompts_path):
                p.unlink(missing_ok=True)
            self.run_file.write_text(json.dumps({"settings": self.settings}, indent=2) + "\n")
        self._file: IO[str] | None = None

    def _previous_settings(self) -> dict | None:
        if not self.run_file.is_file():
            return None
        try:
            return json.loads(self.run_file.read_text(encoding="utf-8")).get("settings")
        except (json.JSONDecodeError, AttributeError):
            return None

    def finished(self, index: int, tokens: Sequence[str]) -> dict | None:
        row = self.done.get(index)
        return row if row is not None and row["tokens"] == list(tokens) else None

    def append(self, row: dict) -> None:
        if self._file is None:
            self._file = open_append(self.path)
        self._file.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._file.flush()

    def rewrite(self, rows: Iterable[dict]) -> None:
        """Replace the log by `rows` (the run's order), atomically."""
        self.close()
        tmp = self.path.with_suffix(".jsonl.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        os.replace(tmp, self.path)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def sum_counts(dicts: Iterable[dict]) -> dict:
    """Key-wise sum of nested dicts of numbers (per-sentence stats into run stats)."""
    total: dict = {}
    for d in dicts:
        for k, v in d.items():
            if isinstance(v, dict):
                total[k] = sum_counts([total.get(k, {}), v])
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                total[k] = total.get(k, 0) + v
            else:
                raise UserError(f"stats field {k!r} holds {v!r}, not a number")
    return total
