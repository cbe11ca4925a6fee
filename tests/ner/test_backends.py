import os
import socket

import pytest

from sft.errors import UserError
from sft.ner.backends import (
    HFBackend,
    OpenAIBackend,
    cut_at_stop,
    may_straddle,
    server_stops,
    weights_signature,
)


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
    ident = backend.identity()
    assert ident["model"] == str(tmp_path) and ident["chat_template"] is True
    assert ident["weights"] == weights_signature(str(tmp_path))
    weights = tmp_path / "model.safetensors"
    os.utime(weights, ns=(1, weights.stat().st_mtime_ns + 10**9))  # retrained: a new cache key
    assert weights_signature(str(tmp_path)) != ident["weights"]
    plain = HFBackend.from_pretrained(str(tmp_path), use_chat_template=False)
    assert plain.identity()["chat_template"] is False  # --api completions with --model
    assert backend.usage["requests"] == 1 and backend.usage["completion_tokens"] == 3
    with pytest.raises(UserError, match="not found"):
        HFBackend.from_pretrained(str(tmp_path / "nope"))


def test_openai_chat_route(llm_server):
    url, state = llm_server
    backend = OpenAIBackend(url, "m", api="chat", concurrency=2)
    prompts = [
        f"The given sentence: {s}\nThe labeled sentence:"
        for s in ["Peter met Ann", "no names here"]
    ]
    assert backend.generate(prompts, 32) == ["@@Peter## met @@Ann##", "no names here"]
    req = state["requests"][0]
    assert req["path"] == "/v1/chat/completions" and req["body"]["model"] == "m"
    assert req["body"]["temperature"] == 0 and req["body"]["max_tokens"] == 32
    sent = sorted(r["body"]["messages"][0]["content"] for r in state["requests"])  # 2 at once
    assert sent == sorted(prompts) and len(req["body"]["messages"]) == 1


def test_openai_completions_sends_one_string_prompt_per_request_and_keeps_order(llm_server):
    url, state = llm_server
    backend = OpenAIBackend(url + "/v1/", "m", api="completions", concurrency=3)
    words = ["Aa", "b", "Cc", "d", "Ee"]
    prompts = [f"The given sentence: {w} x\nThe labeled sentence:" for w in words]
    expected = [f" @@{w}## x" if w[0].isupper() else f" {w} x" for w in words]
    assert backend.generate(prompts, 8, stop=["\n"]) == expected
    assert [r["path"] for r in state["requests"]] == ["/v1/completions"] * 5
    assert all(isinstance(r["body"]["prompt"], str) for r in state["requests"])
    assert sorted(r["body"]["prompt"] for r in state["requests"]) == sorted(prompts)
    assert state["requests"][0]["body"]["stop"] == ["\n"]


def test_a_list_prompt_is_what_the_fake_server_refuses_like_transformers_serve(llm_server):
    # Guards the fake server itself: it must answer a list prompt the way the real one does.
    url, _ = llm_server
    backend = OpenAIBackend(url, "m", api="completions", max_retries=0)
    with pytest.raises(UserError, match="HTTP 400.*prompt must be a string"):
        backend._request(backend.url, {"model": "m", "prompt": ["a", "b"], "max_tokens": 2})


def test_model_id_comes_from_v1_models_when_none_is_given(llm_server):
    url, state = llm_server
    state["models"] = ["org/first-model", "second"]
    backend = OpenAIBackend(url)
    assert backend.generate(["The given sentence: Bob\n"], 4) == ["@@Bob##"]
    assert [r["path"] for r in state["requests"]] == ["/v1/models", "/v1/chat/completions"]
    assert state["requests"][1]["body"]["model"] == "org/first-model"
    assert backend.identity() == {"backend": "openai", "api": "chat", "model": "org/first-model"}
    state["models"] = []
    with pytest.raises(UserError, match="lists no model; pass the model id with --model-name"):
        OpenAIBackend(url).generate(["x"], 2)


def test_server_token_usage_is_summed(llm_server):
    url, _ = llm_server
    backend = OpenAIBackend(url, "m", concurrency=2)
    prompts = ["The given sentence: Bob ran\n", "The given sentence: Ann sat down\n"]
    backend.generate(prompts, 8)
    assert backend.usage["prompt_tokens"] == 5 + 6
    assert backend.usage["completion_tokens"] == 2 + 3
    assert backend.usage["total_tokens"] == 16 and backend.usage["requests"] == 2


def test_may_straddle_and_server_stops():
    stop = ["\nThe given sentence:"]
    assert may_straddle("The given sentence: Bob", stop)  # stopped on the prompt's newline
    assert may_straddle("sentence:", stop) and may_straddle(":", stop)
    assert may_straddle("", stop)  # a server that strips the matched stop
    assert not may_straddle("@@Bob## ran", stop)
    assert not may_straddle("Bob ran", stop)
    assert server_stops(["\nA", "\nA", ""]) == ["\nA"]
    assert server_stops(["abcd", "bc"]) == []  # nested: the client cuts
    assert server_stops(list("abcde")) == []  # more than the OpenAI API takes


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_a_stop_begun_in_the_prompt_is_asked_again_without_stops(llm_server, api):
    """A server that checks stops over the prompt too (a chat template ending in a newline)
    stops a reply that starts with "The given sentence:" at once; the client notices, asks again
    without server-side stops and cuts itself, giving what the local backend gives."""
    url, state = llm_server
    state["prompt_tail"], state["reply_prefix"] = "\n", "The given sentence: "
    prompts = ["The given sentence: Bob ran\nThe labeled sentence:"]
    lead = "" if api == "chat" else " "
    expected = [lead + "The given sentence: @@Bob## ran"]
    stop = ["\nThe given sentence:"]
    client_cut = OpenAIBackend(url, "m", api=api, server_stop=False)
    assert client_cut.generate(prompts, 32, stop) == expected
    assert "stop" not in state["requests"][-1]["body"]
    backend = OpenAIBackend(url, "m", api=api)
    assert backend.generate(prompts, 32, stop) == expected
    # The first reply looks cut short by a straddling stop (in chat mode it was): asked again.
    assert [bool(r["body"].get("stop")) for r in state["requests"][1:]] == [True, False]
    assert backend.usage["asked_again_without_stop"] == 1
    # A stop wholly inside the reply is the server's to apply: no second request.
    state["reply_prefix"] = "ok\nThe given sentence: "
    backend = OpenAIBackend(url, "m", api=api)
    assert backend.generate(prompts, 32, stop) == [lead + "ok"]
    assert backend.usage["asked_again_without_stop"] == 0 and backend.usage["requests"] == 1


def test_generate_each_keeps_what_finished_before_the_server_died(llm_server):
    url, state = llm_server
    state["die_after"] = 2
    backend = OpenAIBackend(url, "m", concurrency=1, max_retries=1, backoff_s=0.01)
    got = []
    with pytest.raises(UserError, match="cannot reach the server"):
        for i, text in backend.generate_each([f"The given sentence: W{i}\n" for i in range(4)], 4):
            got.append((i, text))
    assert sorted(got) == [(0, "@@W0##"), (1, "@@W1##")]


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
    assert len(state["requests"]) == 3 and backend.usage["retries"] == 2
    state["fail_first"] = 5
    with pytest.raises(UserError, match="HTTP 503"):
        OpenAIBackend(url, "m", max_retries=1, backoff_s=0.01).generate(["x"], 4)


@pytest.mark.parametrize(
    "fault",
    [
        {"fail_first": 1, "fail_code": 429},
        {"fail_first": 1, "fail_code": 500},
        {"broken_first": 1},
        {"slow_first": 1, "slow_s": 1.5},
    ],
    ids=["429", "500", "broken-json", "timeout"],
)
def test_transient_faults_are_retried(llm_server, fault):
    url, state = llm_server
    state.update(fault)
    backend = OpenAIBackend(url, "m", max_retries=1, backoff_s=0.01, timeout_s=0.5)
    assert backend.generate(["The given sentence: Zed\n"], 4) == ["@@Zed##"]
    assert backend.usage["retries"] == 1


def test_persistent_faults_give_one_clear_error(llm_server):
    url, state = llm_server
    state["broken_first"] = 9
    with pytest.raises(UserError, match="not a JSON object \\(after 2 tries\\)"):
        OpenAIBackend(url, "m", max_retries=1, backoff_s=0.01).generate(["x"], 4)
    state["broken_first"], state["slow_first"], state["slow_s"] = 0, 9, 1.5
    with pytest.raises(UserError, match="cannot reach the server .*after 2 tries of 0.3 s"):
        OpenAIBackend(url, "m", max_retries=1, backoff_s=0.01, timeout_s=0.3).generate(["x"], 4)
    state["slow_first"] = 0
    with pytest.raises(UserError, match="HTTP 404"):
        OpenAIBackend(url + "/nope", "m", max_retries=3).generate(["x"], 4)


def test_unreachable_server_and_bad_api(llm_server):
    url, _ = llm_server
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(UserError, match="cannot reach"):
        OpenAIBackend(f"http://127.0.0.1:{port}", "m", max_retries=0).generate(["x"], 2)
    with pytest.raises(UserError, match="choose 'chat' or 'completions'"):
        OpenAIBackend(url, "m", api="embeddings")
