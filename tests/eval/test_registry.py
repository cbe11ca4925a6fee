from __future__ import annotations

import pytest

from sft.errors import UserError
from sft.eval.registry import BENCHMARKS, resolve_benchmark

MEMBERS = {"mmlu": ["anatomy", "astronomy"], "bbh": ["navigate"]}


def test_paper_shot_counts() -> None:
    shots = {name: BENCHMARKS[name].num_fewshot for name in ("mmlu", "gsm8k", "math", "bbh")}
    assert shots == {"mmlu": 5, "gsm8k": 4, "math": 4, "bbh": 3}
    assert BENCHMARKS["humaneval"].unsafe and not BENCHMARKS["gsm8k"].unsafe


def test_member_of_a_group_resolves_to_its_subtask() -> None:
    bench = resolve_benchmark("mmlu_anatomy", MEMBERS)
    assert (bench.task, bench.hub_task, bench.metric_key) == (
        "sft_mmlu_anatomy",
        "mmlu_anatomy",
        "acc,none",
    )
    assert resolve_benchmark("bbh_navigate", MEMBERS).task == "sft_bbh_navigate"


@pytest.mark.parametrize("name", ["mmlu_nonsense", "gsm9k", "bbh_"])
def test_unknown_task_is_a_user_error(name: str) -> None:
    with pytest.raises(UserError, match="unknown eval task"):
        resolve_benchmark(name, MEMBERS)
