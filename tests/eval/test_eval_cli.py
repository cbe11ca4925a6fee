"""End to end: `sft-eval` on a tiny random model against the local benchmark data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sft.eval.cli import main


def _run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    return code, capsys.readouterr().err


@pytest.mark.slow
def test_gsm8k_and_two_mmlu_subjects_on_a_run_dir(
    run_dir: Path, eval_data: Path, capsys: pytest.CaptureFixture
) -> None:
    tasks = "gsm8k,mmlu_anatomy,mmlu_astronomy"
    code, err = _run(
        [
            str(run_dir),
            "--tasks",
            tasks,
            "--limit",
            "2",
            "--batch-size",
            "2",
            "--device",
            "cpu",
            "--max-gen-toks",
            "32",
        ],
        capsys,
    )
    assert code == 0, err
    out = run_dir / "eval"
    summary = {e["task"]: e for e in json.loads((out / "summary.json").read_text())}
    assert set(summary) == set(tasks.split(","))
    for name, e in summary.items():
        assert 0.0 <= e["value"] <= 1.0, e
        assert e["n"] == 2 and e["limit"] == 2 and e["chat_template"] is True
        assert e["model"] == str(run_dir / "final")
        record = json.loads((out / f"{name}.json").read_text())
        assert record["summary"]["value"] == e["value"]
        assert record["results"][e["lm_eval_task"]][e["metric"]] == e["value"]
    assert summary["gsm8k"]["num_fewshot"] == 4 and summary["mmlu_anatomy"]["num_fewshot"] == 5
    assert summary["gsm8k"]["metric"] == "exact_match,flexible-extract"


@pytest.mark.slow
def test_evaluate_a_checkpoint_from_python(
    tmp_path: Path, tiny_model_dir: Path, eval_data: Path
) -> None:
    """The training loop's path: a checkpoint's model/ dir, results under RUN_DIR/eval/step-N."""
    from sft.eval import evaluate

    step = tmp_path / "run" / "checkpoints" / "step-4"
    step.mkdir(parents=True)
    (step / "model").symlink_to(tiny_model_dir, target_is_directory=True)
    entries = evaluate(
        step,
        ["mmlu_anatomy"],
        limit=1,
        batch_size=2,
        device="cpu",
        num_fewshot=1,
        chat_template=False,
    )
    e = entries["mmlu_anatomy"]
    assert e["n"] == 1 and e["num_fewshot"] == 1 and e["chat_template"] is False
    assert (tmp_path / "run" / "eval" / "step-4" / "summary.json").is_file()


def test_humaneval_without_permission_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_ALLOW_CODE_EVAL", raising=False)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    code, err = _run(
        [str(tmp_path / "m"), "--tasks", "humaneval", "--out", str(tmp_path / "o")], capsys
    )
    assert code == 2
    assert err.strip().count("\n") == 0 and "--allow-code-execution" in err


def test_bare_model_needs_out(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "config.json").write_text("{}")
    code, err = _run([str(tmp_path), "--tasks", "gsm8k"], capsys)
    assert code == 2 and "--out" in err and err.strip().count("\n") == 0


def test_unknown_task_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "config.json").write_text("{}")
    code, err = _run([str(tmp_path), "--tasks", "gsm9k", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "unknown eval task 'gsm9k'" in err
