"""A run of prompts is never lost: killed mid-way it resumes with nothing asked twice, and a run
that only changes the verification reuses every extraction from the generation cache."""

import json
import random

import pytest

from sft.ner import cli
from sft.ner.readers import Sentence, write_spans_jsonl
from sft.ner.store import GenerationCache, RunLog, open_append, read_jsonl_lenient, sum_counts

from .conftest import fake_answer
from .test_cli import run

WORDS = ["rain", "fell", "in", "the", "city", "and", "talks", "went", "on", "late", "today"]
NAMES = ["Peter", "Ann", "Rome", "Acme", "Tokyo", "Sue", "New", "York"]


def _sentences(n: int, seed: int) -> list[Sentence]:
    rng = random.Random(seed)
    out: dict[str, Sentence] = {}
    while len(out) < n:  # distinct sentences: every prompt is asked once
        words = [rng.choice(WORDS + NAMES) for _ in range(rng.randint(2, 12))]
        ents = [(i, i, "PER") for i, w in enumerate(words) if w in NAMES]
        out[" ".join(words)] = Sentence(words, ents)
    return list(out.values())


@pytest.fixture
def data(tmp_path, monkeypatch):
    d = tmp_path / "data" / "conll2003" / "spans"
    d.mkdir(parents=True)
    write_spans_jsonl(d / "train.jsonl", _sentences(20, 1))
    write_spans_jsonl(d / "test.jsonl", _sentences(70, 2))  # 3 chunks of up to 32 sentences
    monkeypatch.setenv("SFT_DATA_DIR", str(tmp_path / "data"))
    return d


def _argv(url, out, *extra):
    return [
        "prompt",
        "--data",
        "conll2003",
        "--n",
        "0",
        "--k",
        "2",
        "--retrieval",
        "random",
        "--base-url",
        url,
        "--retries",
        "1",
        "--out",
        str(out),
        *extra,
    ]


def _posts(state) -> int:
    return sum(r["body"] is not None for r in state["requests"])


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _scores(out) -> dict:
    m = json.loads((out / "metrics.json").read_text())
    return {k: m[k] for k in ("precision", "recall", "f1", "per_type", "before_verify", "stats")}


def test_a_killed_run_resumes_with_nothing_recomputed(data, tmp_path, llm_server, capsys):
    url, state = llm_server
    ref = tmp_path / "ref"
    code, _, err = run(_argv(url, ref, "--verify"), capsys)
    assert code == 0, err
    total = _posts(state)
    ref_metrics = json.loads((ref / "metrics.json").read_text())
    # One request per distinct prompt ("Peter met Peter" asks about "Peter" once per type).
    assert total == ref_metrics["generations"]["new"] > 70 * 4
    assert total + ref_metrics["generations"]["cached"] == ref_metrics["stats"]["prompts"]

    # The server dies half-way: the run fails, but every answered prompt is on disk.
    state["requests"].clear()
    state["served"], state["die_after"] = 0, total // 2
    out = tmp_path / "out"
    code, _, err = run(_argv(url, out, "--verify"), capsys)
    assert code == 2 and "cannot reach the server" in err
    assert err.splitlines()[-1].startswith("error: ") and "[sft-ner]" not in err.splitlines()[-1]
    served = state["served"]
    assert served == total // 2
    assert f"and {served} generations are saved; rerun the same command to resume" in err
    assert len(GenerationCache(out / "generations.jsonl")) == served
    finished = _lines(out / "predictions.jsonl")
    assert 0 < len(finished) < 70  # whole chunks finished before the death are kept

    # Rerunning the same command resumes: only the prompts never answered are sent.
    state["requests"].clear()
    state["die_after"] = None
    code, _, err = run(_argv(url, out, "--verify"), capsys)
    assert code == 0, err
    assert _posts(state) == total - served
    assert f"resumed {len(finished)} of 70 sentences" in err
    assert f"from the cache, {total - served} new" in err
    assert _lines(out / "predictions.jsonl") == _lines(ref / "predictions.jsonl")
    assert _scores(out) == _scores(ref)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed"] == len(finished)
    assert metrics["generations"]["new"] == total - served
    assert metrics["usage"]["prompt_tokens"] > 0

    # Once more: all resumed, nothing sent.
    state["requests"].clear()
    code, _, err = run(_argv(url, out, "--verify"), capsys)
    assert code == 0 and _posts(state) == 0 and "resumed 70 of 70 sentences" in err
    # --fresh relabels every sentence, still from the cache.
    code, _, err = run(_argv(url, out, "--verify", "--fresh"), capsys)
    assert code == 0 and _posts(state) == 0 and "resumed 0 of 70 sentences" in err
    assert _lines(out / "predictions.jsonl") == _lines(ref / "predictions.jsonl")


def test_changing_only_verification_costs_only_the_verification_prompts(
    data, tmp_path, llm_server, capsys
):
    url, state = llm_server
    out = tmp_path / "out"
    code, _, err = run(_argv(url, out), capsys)
    assert code == 0, err
    extraction = _posts(state)
    assert extraction == 70 * 4
    prompts = _lines(out / "prompts.jsonl")
    assert len(prompts) == extraction and not any(p["cached"] for p in prompts)
    sent = sorted(r["body"]["messages"][0]["content"] for r in state["requests"] if r["body"])
    assert sorted(p["prompt"] for p in prompts) == sent  # the exact prompts sent

    state["requests"].clear()
    code, _, err = run(_argv(url, out, "--verify", "--verify-k", "1"), capsys)
    assert code == 0, err
    assert "settings changed (verify, verify_k); labeling afresh" in err
    metrics = json.loads((out / "metrics.json").read_text())
    asked, new = metrics["stats"]["verify_asked"], metrics["generations"]["new"]
    assert 0 < new <= asked and _posts(state) == new  # only verification prompts were sent
    assert metrics["generations"] == {
        "cached": extraction + asked - new,  # every extraction, and repeated questions
        "new": new,
        "cache": str(out / "generations.jsonl"),
    }
    verify_sent = [r["body"]["messages"][0]["content"] for r in state["requests"] if r["body"]]
    assert all("Please answer with yes or no." in p for p in verify_sent)
    assert metrics["resumed"] == 0 and len(_lines(out / "predictions.jsonl")) == 70

    # A cache is a file: another run directory can share it.
    state["requests"].clear()
    code, _, err = run(
        _argv(url, tmp_path / "other", "--gen-cache", str(out / "generations.jsonl")), capsys
    )
    assert code == 0 and _posts(state) == 0, err


def test_the_cache_key_holds_backend_model_and_decoding(data, tmp_path, llm_server, capsys):
    url, state = llm_server
    cache = str(tmp_path / "shared.jsonl")
    code, _, err = run(_argv(url, tmp_path / "a", "--gen-cache", cache), capsys)
    assert code == 0, err
    for extra in (["--model-name", "other-model"], ["--api", "completions"]):
        state["requests"].clear()
        code, _, err = run(_argv(url, tmp_path / "b", "--gen-cache", cache, *extra), capsys)
        assert code == 0 and _posts(state) == 70 * 4, (extra, err)


def test_half_written_lines_are_skipped_and_appends_start_a_new_line(tmp_path):
    path = tmp_path / "g.jsonl"
    cache = GenerationCache(path)
    cache.put("k1", "one", {})
    cache.close()
    with open(path, "a") as f:
        f.write('{"key": "k2", "te')  # killed mid-write
    cache = GenerationCache(path)
    assert cache.texts == {"k1": "one"}
    cache.put("k3", "three", {})
    cache.close()
    assert GenerationCache(path).texts == {"k1": "one", "k3": "three"}
    assert len(list(read_jsonl_lenient(path))) == 2
    with open_append(path) as f:  # ends with a newline now: nothing added
        pass
    assert path.read_text().count("\n") == 3


def test_run_log_resumes_only_under_the_same_settings(tmp_path):
    log = RunLog(tmp_path, "", {"k": 2})
    log.append({"index": 5, "tokens": ["a", "b"], "entities": []})
    log.close()
    again = RunLog(tmp_path, "", {"k": 2})
    assert again.finished(5, ["a", "b"]) is not None
    assert again.finished(5, ["a", "c"]) is None  # other tokens at that index: relabel
    changed = RunLog(tmp_path, "", {"k": 3})
    assert changed.changed == ["k"] and changed.done == {}
    assert not (tmp_path / "predictions.jsonl").exists()


def test_sum_counts():
    assert sum_counts([{"a": 1, "p": {"x": 2}}, {"a": 2, "p": {"x": 1, "y": 4}}]) == {
        "a": 3,
        "p": {"x": 3, "y": 4},
    }


class DyingBackend:
    """Answers like the fake labeler, one prompt at a time, and raises after `left` answers."""

    def __init__(self, left: int | None = None) -> None:
        self.left, self.calls = left, 0

    def identity(self) -> dict:
        return {"backend": "dying", "model": "rules"}

    def generate_each(self, prompts, max_new_tokens, stop=()):
        for i, p in enumerate(prompts):
            if self.left is not None and self.calls >= self.left:
                raise RuntimeError("backend died")
            self.calls += 1
            yield i, fake_answer(p)


def test_a_backend_dying_after_k_prompts_loses_none_of_them(tmp_path):
    from sft.ner.entity_types import load_types

    sentences = _sentences(40, 3)
    types = load_types("conll2003")
    run_args = {"k": 0, "mode": "per_type", "verify": True}

    def go(backend, out):
        return cli._run_and_write(
            sentences, list(range(40)), types, backend, [], None, out, "", run_args, {"n": 40}
        )

    whole = DyingBackend()
    ref = go(whole, tmp_path / "ref")
    dying = DyingBackend(left=whole.calls - 20)  # in the second chunk (of 32 + 8 sentences)
    with pytest.raises(RuntimeError, match="backend died"):
        go(dying, tmp_path / "out")
    assert len(_lines(tmp_path / "out" / "predictions.jsonl")) == 32
    healthy = DyingBackend()
    again = go(healthy, tmp_path / "out")
    assert dying.calls + healthy.calls == whole.calls  # nothing asked twice
    assert again["f1"] == ref["f1"] and again["stats"] == ref["stats"]
    assert _lines(tmp_path / "out" / "predictions.jsonl") == _lines(
        tmp_path / "ref" / "predictions.jsonl"
    )
