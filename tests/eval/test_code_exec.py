from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from sft.errors import UserError
from sft.eval import code_exec

DOC = {
    "prompt": 'def add(a, b):\n    """Sum."""\n',
    "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n",
    "entry_point": "add",
}


@pytest.fixture
def allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ALLOW_CODE_EVAL", "1")


def test_refuses_without_permission(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_ALLOW_CODE_EVAL", raising=False)
    with pytest.raises(UserError, match="--allow-code-execution"):
        code_exec.process_results(DOC, ["    return a + b\n"])


def test_correct_body_passes_wrong_body_fails(allowed: None) -> None:
    assert code_exec.process_results(DOC, ["    return a + b\n```\ntrailing prose"]) == {
        "pass@1": 1.0
    }
    assert code_exec.process_results(DOC, ["    return a * b\n"]) == {"pass@1": 0.0}
    assert code_exec.process_results(DOC, ["    return (\n"]) == {"pass@1": 0.0}


def test_endless_program_is_killed(allowed: None) -> None:
    start = time.monotonic()
    assert not code_exec.program_passes("while True:\n    pass\n", timeout_s=1.0)
    assert time.monotonic() - start < 5


def test_reference_solutions_pass(allowed: None, eval_data: Path) -> None:
    lines = (eval_data / "humaneval" / "HumanEval.jsonl").open()
    docs = [json.loads(next(lines)) for _ in range(3)]
    assert all(
        code_exec.process_results(d, [d["canonical_solution"]])["pass@1"] == 1.0 for d in docs
    )
    assert code_exec.process_results(docs[0], ["    return None\n"])["pass@1"] == 0.0
