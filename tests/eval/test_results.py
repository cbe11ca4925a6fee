from __future__ import annotations

import json
from pathlib import Path

import pytest

from sft.errors import UserError
from sft.eval.registry import BENCHMARKS
from sft.eval.results import read_summary, summary_entry, task_record, update_summary

# The shape lm_eval.simple_evaluate returns for a group of two sub-tasks.
GROUP_RESULTS = {
    "results": {
        "sft_mmlu": {"acc,none": 0.25, "acc_stderr,none": 0.1},
        "sft_mmlu_a": {"acc,none": 0.5, "acc_stderr,none": 0.2},
        "sft_mmlu_b": {"acc,none": 0.0, "acc_stderr,none": "N/A"},
    },
    "group_subtasks": {"sft_mmlu": ["sft_mmlu_a", "sft_mmlu_b"]},
    "n-samples": {
        "sft_mmlu_a": {"original": 9, "effective": 3},
        "sft_mmlu_b": {"original": 9, "effective": 3},
    },
    "n-shot": {"sft_mmlu_a": 5, "sft_mmlu_b": 5},
    "configs": {
        "sft_mmlu_a": {"task": "sft_mmlu_a"},
        "sft_mmlu_b": {"task": "sft_mmlu_b"},
        "other": {},
    },
    "samples": {"sft_mmlu_a": [{"doc_id": 0}]},
}


def _entry(**kw):
    return summary_entry(
        GROUP_RESULTS,
        BENCHMARKS["mmlu"],
        "sft_mmlu",
        model="m",
        limit=3,
        chat_template=True,
        source="offline",
        **kw,
    )


def test_group_entry_sums_subtask_counts_and_copies_the_value() -> None:
    e = _entry()
    assert (e["value"], e["stderr"], e["n"], e["num_fewshot"], e["limit"]) == (0.25, 0.1, 6, 5, 3)
    assert e["metric"] == "acc,none" and e["task"] == "mmlu"


def test_missing_metric_is_a_user_error() -> None:
    with pytest.raises(UserError, match="no 'exact_match,flexible-extract'"):
        summary_entry(
            GROUP_RESULTS,
            BENCHMARKS["gsm8k"],
            "sft_mmlu",
            model="m",
            limit=None,
            chat_template=False,
            source="offline",
        )


def test_stock_task_with_another_filter_name_is_found() -> None:
    results = {"results": {"humaneval_instruct": {"pass@1,create_test": 0.5}}}
    e = summary_entry(
        results,
        BENCHMARKS["humaneval"],
        "humaneval_instruct",
        model="m",
        limit=None,
        chat_template=True,
        source="hub",
    )
    assert (e["metric"], e["value"], e["stderr"], e["n"]) == ("pass@1,create_test", 0.5, None, 0)


def test_task_record_keeps_only_the_task_and_its_members() -> None:
    rec = task_record(GROUP_RESULTS, "sft_mmlu", _entry(), with_samples=False)
    assert set(rec["configs"]) == {"sft_mmlu_a", "sft_mmlu_b"} and "samples" not in rec
    assert task_record(GROUP_RESULTS, "sft_mmlu", _entry(), with_samples=True)["samples"]


def test_summary_merges_by_task(tmp_path: Path) -> None:
    update_summary(tmp_path, [{"task": "gsm8k", "value": 0.1}, {"task": "mmlu", "value": 0.2}])
    update_summary(tmp_path, [{"task": "gsm8k", "value": 0.3}])
    entries = {e["task"]: e["value"] for e in read_summary(tmp_path)}
    assert entries == {"gsm8k": 0.3, "mmlu": 0.2}
    assert isinstance(json.loads((tmp_path / "summary.json").read_text()), list)
