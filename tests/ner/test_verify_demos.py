import json
import random
import re

import numpy as np
import pytest

from sft.errors import UserError
from sft.ner.entity_types import load_types
from sft.ner.pipeline import run_gpt_ner
from sft.ner.prompts import VerifyDemo
from sft.ner.readers import Sentence, write_spans_jsonl
from sft.ner.retrieval import HFSentenceEmbedder, HFWordEncoder, MeanPoolEmbedder
from sft.ner.verify_demos import WordKNNVerifyDemos

from .conftest import fake_answer
from .test_cli import run
from .test_pipeline import ScriptedBackend
from .test_retrieval import word_vec

TYPES = load_types("conll2003")


class HashWords:
    """Word vectors: a hashed one-hot of the lowercased word plus a capitalisation bit."""

    def __init__(self):
        self.name, self.calls = "hash-words-256", 0

    def __call__(self, sentences):
        self.calls += len(sentences)
        return [np.stack([word_vec(w, 256) for w in s]) for s in sentences]


POOL = [
    Sentence(["the", "cat", "sat", "on", "the", "mat"]),
    Sentence(["Peter", "lives", "in", "New", "York"], [(0, 0, "PER"), (3, 4, "LOC")]),
    Sentence(["stocks", "fell", "in", "Tokyo", "trading"], [(3, 3, "LOC")]),
    Sentence(
        ["IBM", "hired", "Mary", "in", "Tokyo"], [(0, 0, "ORG"), (2, 2, "PER"), (4, 4, "LOC")]
    ),
]


def test_yes_demos_are_entities_of_the_type_and_no_demos_the_rest():
    src = WordKNNVerifyDemos(POOL, HashWords())
    query = ["she", "flew", "to", "Tokyo"]
    (loc,), (per,) = (
        src.select([(query, (3, 3, "LOC"))], 1),
        src.select([(query, (3, 3, "PER"))], 1),
    )
    # The nearest word is a "Tokyo" of the pool: a LOC there, so yes for LOC and no for PER.
    assert loc == [VerifyDemo(tuple(POOL[2].tokens), "Tokyo", True)]
    assert per == [VerifyDemo(tuple(POOL[2].tokens), "Tokyo", False)]
    # A word that is no entity gives a no demo with the word itself.
    (sat,) = src.select([(["dogs", "sat"], (1, 1, "LOC"))], 1)
    assert sat == [VerifyDemo(tuple(POOL[0].tokens), "sat", False)]


def test_a_multiword_entity_is_one_demo_and_the_most_similar_is_last():
    src = WordKNNVerifyDemos(POOL, HashWords())
    (demos,) = src.select([(["in", "New", "York", "today"], (1, 2, "LOC"))], 3)
    assert len(demos) == 3
    assert demos[-1] == VerifyDemo(tuple(POOL[1].tokens), "New York", True)
    assert len({(d.tokens, d.word) for d in demos}) == 3  # "New" and "York" did not give two


def test_invariant_on_random_asks():
    rng = random.Random(0)
    src = WordKNNVerifyDemos(POOL, HashWords())
    vocab = [w for s in POOL for w in s.tokens] + ["zebra", "Quux"]
    asks = []
    for _ in range(60):
        toks = [rng.choice(vocab) for _ in range(rng.randint(1, 6))]
        s = rng.randrange(len(toks))
        asks.append((toks, (s, rng.randrange(s, len(toks)), rng.choice(["PER", "LOC", "ORG"]))))
    for (toks, (_, _, label)), demos in zip(asks, src.select(asks, 4)):
        assert 1 <= len(demos) <= 4 and len({(d.tokens, d.word) for d in demos}) == len(demos)
        for d in demos:
            sent = next(p for p in POOL if tuple(p.tokens) == d.tokens)
            gold = {" ".join(sent.tokens[s : e + 1]) for s, e, t in sent.entities if t == label}
            assert d.answer == (d.word in gold)


def test_exclude_identical_and_the_cached_datastore(tmp_path):
    src = WordKNNVerifyDemos(POOL, HashWords(), exclude_identical=True)
    (demos,) = src.select([(POOL[2].tokens, (3, 3, "LOC"))], 5)
    assert demos and all(d.tokens != tuple(POOL[2].tokens) for d in demos)
    enc = HashWords()
    WordKNNVerifyDemos(POOL, enc, cache_dir=tmp_path)
    assert enc.calls == len(POOL)
    again = HashWords()
    cached = WordKNNVerifyDemos(POOL, again, cache_dir=tmp_path)
    assert again.calls == 0
    assert cached.select([(["Tokyo"], (0, 0, "LOC"))], 2) == src.select(
        [(["Tokyo"], (0, 0, "LOC"))], 2
    )
    # Other gold labels are another datastore: the answers depend on them.
    relabeled = [Sentence(s.tokens, [(a, b, "MISC") for a, b, _ in s.entities]) for s in POOL]
    WordKNNVerifyDemos(relabeled, HashWords(), cache_dir=tmp_path)
    assert len(list(tmp_path.glob("verify-words-*.npz"))) == 2
    with pytest.raises(UserError, match="pool"):
        WordKNNVerifyDemos([], HashWords())


def test_pipeline_asks_each_entity_with_its_own_demos():
    backend = ScriptedBackend(lambda p: "yes" if "Please answer" in p else fake_answer(p))
    source = WordKNNVerifyDemos(POOL, HashWords())
    run_gpt_ner(
        [["Tokyo", "and", "Mary"]],
        TYPES[:2],  # PER, ORG
        backend,
        verify=True,
        verify_k=1,
        verify_source=source,  # no extraction demos (k=0): the pool is the datastore
    )
    asked = {re.findall(r'Is the word "(.*?)"', p)[-1]: p for p in backend.prompts if "Please" in p}
    assert set(asked) == {"Tokyo", "Mary"}
    # Each entity's demo is its own nearest pool word, answered for the asked type.
    assert 'The given sentence: IBM hired Mary in Tokyo\nIs the word "Mary"' in asked["Mary"]
    assert re.search(r'"Mary" in the given sentence a person entity\?.*\nyes', asked["Mary"])
    assert re.search(r'"Tokyo" in the given sentence a person entity\?.*\nno', asked["Tokyo"])


def test_verify_k_without_demos_to_draw_from_is_an_error():
    backend = ScriptedBackend(fake_answer)
    with pytest.raises(UserError, match="verify_k=2 needs demos"):
        run_gpt_ner([["Peter", "ran"]], TYPES[:1], backend, verify=True, verify_k=2)
    assert backend.prompts == []  # refused before any prompt
    # Zero-shot verification, or verify_k without verify, stay fine.
    run_gpt_ner([["Peter", "ran"]], TYPES[:1], backend, verify=True)
    run_gpt_ner([["Peter", "ran"]], TYPES[:1], backend, verify_k=2)


def _files(tmp_path):
    d = tmp_path / "conll2003"  # the path names the dataset, so its types apply
    d.mkdir()
    write_spans_jsonl(d / "pool.jsonl", POOL)
    test = [Sentence(["Mary", "visited", "Tokyo"], [(0, 0, "PER"), (2, 2, "LOC")])]
    write_spans_jsonl(d / "test.jsonl", test)
    return str(d / "pool.jsonl"), str(d / "test.jsonl")


def _asked(state):
    contents = [r["body"]["messages"][0]["content"] for r in state["requests"] if r["body"]]
    return [c for c in contents if "Please answer" in c]


def test_cli_refuses_verify_k_with_no_demos(tmp_path, llm_server, capsys):
    url, state = llm_server
    pool, test = _files(tmp_path)
    argv = ["prompt", "--data", test, "--base-url", url, "--model-name", "m", "--k", "0"]
    argv += ["--verify", "--verify-k", "2", "--out", str(tmp_path / "o")]
    code, _, err = run(argv, capsys)
    assert code == 2 and "--verify-k > 0 with --k 0 has no demos" in err
    assert state["requests"] == []
    # Per-entity demos need a feature model; with a server and no --verify-encoder, none.
    code, _, err = run([*argv, "--pool", pool, "--verify-demos", "entity"], capsys)
    assert code == 2 and "needs --verify-encoder" in err
    assert state["requests"] == []  # refused before the server was asked anything


def test_cli_per_entity_verification_with_a_saved_model(tiny, tmp_path, llm_server, capsys):
    url, state = llm_server
    model, tok = tiny
    enc_dir = tmp_path / "final"
    model.save_pretrained(enc_dir)
    tok.save_pretrained(enc_dir)
    pool, test = _files(tmp_path)
    out = tmp_path / "out"
    argv = ["prompt", "--data", test, "--pool", pool, "--k", "0", "--base-url", url]
    argv += ["--model-name", "m", "--verify", "--verify-k", "2", "--verify-demos", "entity"]
    argv += ["--verify-encoder", str(enc_dir), "--cache-dir", str(tmp_path / "cache")]
    code, _, err = run([*argv, "--out", str(out)], capsys)
    assert code == 0, err
    asked = _asked(state)
    assert asked and all(p.count("Please answer with yes or no.") == 3 for p in asked)
    pool_texts = {" ".join(s.tokens) for s in POOL}
    for p in asked:
        demos = re.findall(r"The given sentence: (.*)", p)[:-1]
        assert len(demos) == 2 and set(demos) <= pool_texts
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["settings"]["verify_demos"] == "entity"
    assert metrics["stats"]["verify_asked"] == len(asked)
    assert len(list((tmp_path / "cache").glob("verify-words-*.npz"))) == 1


def test_word_encoder_features_of_a_saved_causal_lm(tiny, tmp_path):
    model, tok = tiny
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    enc = HFWordEncoder.from_pretrained(tmp_path)
    src = WordKNNVerifyDemos(POOL, enc)
    # A pool word asked in its own sentence finds itself first (same left context, same vector).
    (demos,) = src.select([(POOL[3].tokens, (2, 2, "PER"))], 1)
    assert demos == [VerifyDemo(tuple(POOL[3].tokens), "Mary", True)]


def test_cls_pooling_beside_mean_pooling(tiny, tmp_path):
    model, tok = tiny
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    cls = HFSentenceEmbedder(tmp_path, pooling="cls", batch_size=3)
    mean = MeanPoolEmbedder(tmp_path)
    assert cls.name.startswith("clspool:") and mean.name.startswith("meanpool:")
    texts = ["abc", "a completely different text", "xyz"]
    c, m = cls(texts), mean(texts)
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1.0, rtol=1e-5)
    # In a causal LM the first token sees only itself: the same first byte, the same CLS vector.
    np.testing.assert_allclose(c[0], c[1], atol=1e-5)
    assert not np.allclose(m[0], m[1], atol=1e-3) and not np.allclose(c[0], c[2], atol=1e-3)
    # Padding, on either side, never moves the first real token.
    np.testing.assert_allclose(cls(["xyz"])[0], c[2], atol=1e-5)
    cls.tokenizer.padding_side = "left"
    np.testing.assert_allclose(cls(texts), c, atol=1e-5)
    with pytest.raises(UserError, match="pooling"):
        HFSentenceEmbedder(tmp_path, pooling="max")


def test_the_demo_source_is_a_config_option_too(tmp_path, llm_server, capsys):
    url, state = llm_server
    pool, test = _files(tmp_path)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"data: {test}\npool: {pool}\nk: 0\nverify: true\nverify_k: 2\nverify_demos: entity\n"
    )
    argv = ["prompt", "--config", str(cfg), "--base-url", url, "--out", str(tmp_path / "o")]
    code, _, err = run(argv, capsys)
    assert code == 2 and "--verify-demos entity needs --verify-encoder" in err
    assert state["requests"] == []
