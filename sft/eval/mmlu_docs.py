"""MMLU rows from the local CSV files, reshaped into the fields lm_eval's mmlu template reads.

The CSV files (`mmlu/data/{dev,test}/<subject>_<split>.csv`) have no header; each row is
`question, A, B, C, D, answer-letter`. lm_eval's template reads `question`, `choices` (the four
options in order) and `answer` (the index of the right option).

Invariant: the option texts are the exact strings of the file and `choices[answer]` is the option
whose letter the file names.
"""

from __future__ import annotations

import datasets

LETTERS = ("A", "B", "C", "D")
FEATURES = datasets.Features(
    {
        "question": datasets.Value("string"),
        "choices": datasets.Sequence(datasets.Value("string")),
        "answer": datasets.Value("int64"),
    }
)


def to_lm_eval_doc(row: dict) -> dict:
    """One CSV row -> {"question", "choices", "answer"} as lm_eval's mmlu template expects."""
    letter = str(row["answer"]).strip()
    if letter not in LETTERS:
        raise ValueError(f"MMLU row has answer {letter!r}, expected one of {LETTERS}")
    return {
        "question": row["question"],
        "choices": [row[k] for k in LETTERS],
        "answer": LETTERS.index(letter),
    }


def process_docs(dataset: datasets.Dataset) -> datasets.Dataset:
    """lm_eval `process_docs` hook: applied to the test split and to the few-shot (dev) split."""
    return dataset.map(to_lm_eval_doc, remove_columns=list(dataset.column_names), features=FEATURES)
