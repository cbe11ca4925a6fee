import socket

import pytest

from sft.errors import UserError
from sft.ner.backends import HFBackend, OpenAIBackend, cut_at_stop


def test_cut_at_stop():
    assert cut_at_stop("abc\nThe given sentence: x", ["\nThe given"]) == "abc"
    assert cut_at_stop("a|b#c", ["#", "|"]) == "a"
    assert cut_at_stop("abc", []) == "abc"


def test_hf_batched_left_padded_equals_one_by_one(tiny):
    model, tok = tiny
    prompts = ["short", "a much longer prompt than the first one", "mid length one", "x"]
    batched = HFBackend(model, tok, batch_size=4).generate(prompts, 6)
    single = [HFBackend(model, tok, batch_size=1).generate([p], 6)[0] for p in prompts]
    assert batched == single
    assert len(batched) == 4 and all(isinstance(t, str) for t in batched)


def test_hf_uses_chat_template_and_returns_only_new_text(tiny):
    model, tok = tiny
    backend = HFBackend(model, tok)
    assert backend.use_chat_template
    rendered = backend.render("hello")
    assert rendered == "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
    out = backend.generate(["hello"], 5)[0]
    assert "hello" not in out and "<|im_start|>" not in out
    plain = HFBackend(model, tok, use_chat_template=False)
    assert plain.render("hello") == "hello"


def test_hf_from_pretrained_dir_and_missing(tiny, tmp_path):
    model, tok = tiny
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    backend = HFBackend.from_pretrained(str(tmp_path), batch_size=2)
    assert backend.generate(["abc"], 3) == HFBackend(model, tok).generate(["abc"], 3)
    with pytest.raises(UserError, match="not found"):
        HFBackend.from_pretrained(str(tmp_path / "nope"))


def test_openai_chat_route(llm_server):
    url, state = llm_server
    backend = OpenAIBackend(url, "m", api="chat", workers=2)
    prompts = [
        f"The given sentence: {s}\nThe labeled sentence:"
        for s in ["Peter met Ann", "no names here"]
    ]
    assert backend.generate(prompts, 32) == ["@@Peter## met @@Ann##", "no names here"]
    req = state["requests"][0]
    assert req["path"] == "/v1/chat/completions"
    assert req["body"]["temperature"] == 0 and req["body"]["max_tokens"] == 32
    sent = sorted(r["body"]["messages"][0]["content"] for r in state["requests"])  # 2 workers
    assert sent == sorted(prompts) and len(req["body"]["messages"]) == 1


def test_openai_completions_route_batches_and_keeps_order(llm_server):
    url, state = llm_server
    backend = OpenAIBackend(url + "/v1/", "m", api="completions", batch_size=2)
    prompts = [f"The given sentence: {w} x\nThe labeled sentence:" for w in ["Aa", "b", "Cc"]]
    assert backend.generate(prompts, 8, stop=["\n"]) == [" @@Aa## x", " b x", " @@Cc## x"]
    assert [r["path"] for r in state["requests"]] == ["/v1/completions"] * 2
    assert state["requests"][0]["body"]["stop"] == ["\n"]


def test_api_key_from_env_is_sent_and_never_shown(llm_server, monkeypatch):
    url, state = llm_server
    state["key"] = "sk-test-secret-123"
    monkeypatch.setenv("MY_NER_KEY", "sk-test-secret-123")
    backend = OpenAIBackend(url, "m", api_key_env="MY_NER_KEY")
    assert backend.generate(["The given sentence: Bob\n"], 4) == ["@@Bob##"]
    assert state["requests"][-1]["auth"] == "Bearer sk-test-secret-123"
    monkeypatch.setenv("MY_NER_KEY", "sk-wrong-secret-456")
    with pytest.raises(UserError) as err:
        backend.generate(["The given sentence: Bob\n"], 4)
    assert "HTTP 401" in str(err.value) and "$MY_NER_KEY" in str(err.value)
    assert "secret" not in str(err.value)
    assert "sk-" not in repr(vars(backend))


def test_retries_on_server_errors_then_gives_a_clear_error(llm_server):
    url, state = llm_server
    state["fail_first"] = 2
    backend = OpenAIBackend(url, "m", max_retries=2, backoff_s=0.01)
    assert backend.generate(["The given sentence: Zed\n"], 4) == ["@@Zed##"]
    assert len(state["requests"]) == 3
    state["fail_first"] = 5
    with pytest.raises(UserError, match="HTTP 503"):
        OpenAIBackend(url, "m", max_retries=1, backoff_s=0.01).generate(["x"], 4)


def test_unreachable_server_and_bad_api(llm_server):
    url, _ = llm_server
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(UserError, match="cannot reach"):
        OpenAIBackend(f"http://127.0.0.1:{port}", "m", max_retries=0).generate(["x"], 2)
    with pytest.raises(UserError, match="choose 'chat' or 'completions'"):
        OpenAIBackend(url, "m", api="embeddings")
