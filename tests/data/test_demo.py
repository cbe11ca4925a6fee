"""The embedded demo dataset is deterministic, varied, and its answers check out."""

from __future__ import annotations

from sft.data.demo import TASKS, generate_demo, normalize_answer


def test_deterministic():
    assert generate_demo(200, seed=3) == generate_demo(200, seed=3)
    assert generate_demo(50, seed=3) != generate_demo(50, seed=4)


def test_every_task_appears_and_answers_match_assistant():
    rows = generate_demo(500)
    assert {r["task"] for r in rows} == set(TASKS)
    for r in rows:
        assert r["messages"][1]["content"] == r["answer"]
        assert r["messages"][0]["role"] == "user"


def test_answers_are_correct_for_checkable_tasks():
    for r in generate_demo(300):
        q = r["messages"][0]["content"]
        if r["task"] == "arithmetic":
            expr = q.split("Compute ")[1].split(".")[0]
            assert str(eval(expr)) == r["answer"]
        if r["task"] == "sorting":
            nums = [int(x) for x in q.split("\n")[1].split(", ")]
            assert r["answer"] == ", ".join(map(str, sorted(nums)))


def test_lengths_vary_widely(tiny_tokenizer):
    lens = [len(r["messages"][0]["content"]) + len(r["answer"]) for r in generate_demo(1000)]
    assert min(lens) < 80 and max(lens) > 1500  # characters: short and long samples


def test_normalize_answer():
    assert normalize_answer("  12 \n") == "12"
    assert normalize_answer("a  b\n\n c") == "a b\nc"
