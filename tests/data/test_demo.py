"""The embedded demo dataset is deterministic, varied, and its answers check out."""

from __future__ import annotations

import pytest

from sft.data.demo import DEFAULT_TASKS, generate_demo, normalize_answer
from sft.data.demo_facts import CAPITALS, FACT_TASKS, OPPOSITES, PLURALS


def test_deterministic():
    assert generate_demo(200, seed=3) == generate_demo(200, seed=3)
    assert generate_demo(50, seed=3) != generate_demo(50, seed=4)


def test_every_task_appears_and_answers_match_assistant():
    rows = generate_demo(500)
    assert {r["task"] for r in rows} == set(DEFAULT_TASKS)
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


def test_a_task_named_twice_is_drawn_twice_as_often():
    rows = generate_demo(3000, seed=5, tasks=("capital", "capital", "plural"))
    n = {t: sum(r["task"] == t for r in rows) for t in ("capital", "plural")}
    assert 1.8 < n["capital"] / n["plural"] < 2.2


def test_unknown_task_is_refused():
    with pytest.raises(ValueError, match="unknown demo task"):
        generate_demo(10, tasks=("capitals",))


@pytest.mark.parametrize("facts", [CAPITALS, PLURALS, OPPOSITES])
def test_fact_lists_have_no_repeats(facts):
    assert len({q for q, _ in facts}) == len(facts)


@pytest.mark.parametrize("task", sorted(FACT_TASKS))
def test_held_out_prompts_never_appear_in_training_rows(task):
    train = {r["messages"][0]["content"] for r in generate_demo(2000, 1, (task,))}
    held = {r["messages"][0]["content"] for r in generate_demo(500, 2, (task,), held_out=True)}
    assert train and held and not train & held
    assert len(held) >= 10  # a quarter of each fact list
