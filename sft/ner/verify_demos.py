"""Where self-verification demonstrations come from: the sentence's extraction demos, or
per-entity kNN over the words of the training set (GPT-NER's way).

Sources (`SOURCES`, chosen by `verify_demos=` / `--verify-demos`):
- `extraction`: verification demos made from the demonstration sentences already retrieved for
  the sentence's extraction prompts (`prompts.verify_demos`): yes for their entities of the type,
  no for their entities of other types. Needs k > 0 extraction demos.
- `entity`: `WordKNNVerifyDemos`. The datastore is every word of the pool (the training set),
  each with its feature vector from a word encoder (`retrieval.HFWordEncoder` over a causal LM
  fine-tuned on the NER data by `sft-train`, its `final/`) and its gold label. An extracted
  entity of type T is the mean of its words' vectors in the query sentence; its nearest
  datastore words by cosine become the demos. A word inside a gold entity of type T gives "yes"
  with that whole entity as the phrase; any other word gives "no" (the word itself, or the whole
  gold entity of another type it lies in). Words of one gold entity give one demo.

Invariant: `select` returns, per asked entity, at most k demos with distinct (sentence, phrase),
ordered least similar first so the most similar sits next to the query (as the extraction demos
are); a demo answers yes exactly when its phrase is a gold entity of the asked type of its pool
sentence; with `exclude_identical`, no demo comes from a pool sentence with the query's words.
The datastore is computed once and cached on disk, keyed by the encoder's name and the pool
with its entities (`retrieval.pool_key`), so a stale datastore is never read.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from sft.errors import UserError
from sft.ner.bio import Span
from sft.ner.prompts import VerifyDemo
from sft.ner.readers import Sentence
from sft.ner.retrieval import WordEncoder, _cached, _Exclusion, _normalize, pool_key

SOURCES = ("extraction", "entity")

# Nearest words looked at per asked entity, as a multiple of k: several words of one gold entity
# collapse into one demo, so more than k are needed to fill k.
_OVERSAMPLE = 8


class VerifyDemoSource(Protocol):
    """Chooses the verification demos of each asked entity `(sentence tokens, span)`."""

    def select(
        self, asks: Sequence[tuple[Sequence[str], Span]], k: int
    ) -> list[list[VerifyDemo]]: ...


class WordKNNVerifyDemos:
    """Per-entity verification demos from a kNN datastore of the pool's words."""

    def __init__(
        self,
        pool: Sequence[Sentence],
        encoder: WordEncoder,
        cache_dir: str | Path | None = None,
        exclude_identical: bool = False,
        query_batch: int = 64,
    ) -> None:
        if not pool:
            raise UserError("per-entity verification demos need a pool of labeled sentences")
        self.pool, self.encoder, self.query_batch = pool, encoder, query_batch
        self.exclude = _Exclusion(pool, exclude_identical)
        key = "verify-words-" + pool_key(encoder.name, pool, with_entities=True)
        arrays = _cached(cache_dir, key, self._build)
        self.index = np.asarray(arrays["emb"], dtype=np.float32)
        self.sent, self.word = arrays["sent"], arrays["word"]
        # Per pool sentence, the gold entity covering each word (the longest, for nested ones).
        self._cover: dict[int, dict[int, Span]] = {}

    def _build(self) -> dict[str, np.ndarray]:
        vecs, sent, word = [], [], []
        for i, words in enumerate(self.encoder([list(s.tokens) for s in self.pool])):
            vecs.append(words)
            sent += [i] * len(words)
            word += range(len(words))
        return {
            # float16 on disk halves the datastore (203k CoNLL-2003 train words); cosine order
            # is unchanged at that precision for anything but near ties.
            "emb": _normalize(np.concatenate(vecs)).astype(np.float16),
            "sent": np.asarray(sent, dtype=np.int32),
            "word": np.asarray(word, dtype=np.int32),
        }

    def _covering(self, i: int, w: int) -> Span | None:
        if i not in self._cover:
            cover: dict[int, Span] = {}
            for s, e, t in sorted(self.pool[i].entities, key=lambda x: x[0] - x[1]):
                for j in range(s, e + 1):
                    cover.setdefault(j, (s, e, t))
            self._cover[i] = cover
        return self._cover[i].get(w)

    def demo(self, i: int, w: int, label: str) -> VerifyDemo:
        """The demo made from word `w` of pool sentence `i` for the type `label`."""
        tokens = self.pool[i].tokens
        ent = self._covering(i, w)
        if ent is None:
            return VerifyDemo(tuple(tokens), tokens[w], False)
        s, e, t = ent
        return VerifyDemo(tuple(tokens), " ".join(tokens[s : e + 1]), t == label)

    def select(self, asks: Sequence[tuple[Sequence[str], Span]], k: int) -> list[list[VerifyDemo]]:
        """Up to `k` demos for each asked entity `(sentence tokens, (start, end, label))`."""
        if k <= 0 or not asks:
            return [[] for _ in asks]
        sentences: dict[tuple[str, ...], int] = {}
        for tokens, _ in asks:
            sentences.setdefault(tuple(tokens), len(sentences))
        words = self.encoder([list(t) for t in sentences])
        queries = _normalize(
            np.stack([words[sentences[tuple(t)]][s : e + 1].mean(axis=0) for t, (s, e, _) in asks])
        )
        want = min(len(self.index), k * _OVERSAMPLE)
        out: list[list[VerifyDemo]] = []
        for b in range(0, len(asks), self.query_batch):
            scores = queries[b : b + self.query_batch] @ self.index.T
            for row, (tokens, (_, _, label)) in zip(scores, asks[b : b + self.query_batch]):
                banned = set(self.exclude.indices(tokens))
                top = np.argpartition(-row, want - 1)[:want] if want < len(row) else np.arange(want)
                # Most similar first, ties by datastore order (pool order, then word order).
                top = top[np.lexsort((top, -row[top]))]
                chosen: list[VerifyDemo] = []
                seen: set[tuple[int, str]] = set()
                for j in top:
                    i = int(self.sent[j])
                    if i in banned:
                        continue
                    d = self.demo(i, int(self.word[j]), label)
                    if (i, d.word) not in seen:
                        seen.add((i, d.word))
                        chosen.append(d)
                        if len(chosen) == k:
                            break
                out.append(chosen[::-1])
        return out
