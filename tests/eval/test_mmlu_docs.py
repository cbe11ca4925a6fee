from __future__ import annotations

import datasets
import pytest

from sft.eval.mmlu_docs import process_docs, to_lm_eval_doc


def test_row_becomes_question_choices_and_answer_index() -> None:
    row = {"question": "2+2?", "A": "None", "B": "4", "C": "5", "D": "007", "answer": "B"}
    doc = to_lm_eval_doc(row)
    assert doc == {"question": "2+2?", "choices": ["None", "4", "5", "007"], "answer": 1}


def test_process_docs_types_answer_as_int() -> None:
    ds = datasets.Dataset.from_list(
        [{"question": "q", "A": "a", "B": "b", "C": "c", "D": "d", "answer": "D"}]
    )
    out = process_docs(ds)
    assert out[0]["answer"] == 3 and out[0]["choices"][3] == "d"


def test_bad_answer_letter_raises() -> None:
    with pytest.raises(ValueError, match="expected one of"):
        to_lm_eval_doc({"question": "q", "A": "a", "B": "b", "C": "c", "D": "d", "answer": "E"})
