from __future__ import annotations

import json
from pathlib import Path

from sft.eval.math_task import extract_answer, fewshot_samples, process_results


def test_fewshot_exemplars_come_from_lm_eval_minerva_task() -> None:
    samples = fewshot_samples()
    assert len(samples) == 4
    assert all(
        "\\boxed" in s["solution"] and "The final answer is" in s["solution"] for s in samples
    )


def test_extract_prefers_final_answer_sentence_then_last_box() -> None:
    assert (
        extract_answer(
            "so \\boxed{3}. Final Answer: The final answer is $\\frac{1}{2}$. I hope it is correct."
        )
        == "\\frac{1}{2}"
    )
    assert extract_answer("first \\boxed{1} then \\boxed{2}") == "2"
    assert extract_answer("no answer here") is None


def test_equivalent_answers_score_one_others_zero() -> None:
    doc = {"answer": "\\frac{1}{2}"}
    assert process_results(doc, ["thus \\boxed{\\dfrac12}"]) == {"exact_match": 1}
    assert process_results(doc, ["thus \\boxed{0.3}"]) == {"exact_match": 0}
    assert process_results(doc, ["I give up"]) == {"exact_match": 0}


def test_reference_solutions_score_one(eval_data: Path) -> None:
    import datasets
    from lm_eval.tasks.hendrycks_math.utils import process_docs

    rows = [json.loads(line) for line in (eval_data / "math" / "math500_test.jsonl").open()][:50]
    docs = process_docs(datasets.Dataset.from_list(rows))
    assert sum(process_results(d, [d["solution"]])["exact_match"] for d in docs) == len(docs)
