"""sft/evaluation.py through real runs: data.eval_by splits the validation loss by a row field
without changing it, and the split values do not depend on the batching choice."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(tmp_path: Path, name: str, data: Path, *extra: str) -> Path:
    run_dir = tmp_path / name
    args = ["model=tiny", "data=file", f"data.path={data}", "data.val_fraction=0.3",
            "data.max_length=256", "train.max_steps=2", "train.micro_batch_size=4",
            "train.eval_at_start=true", "train.progress=false", "train.report_to=none",
            f"run_dir={run_dir}", *extra]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, str(ROOT / "sft" / "train.py"), *args],
        capture_output=True, text=True, cwd=ROOT, check=False, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return run_dir


def _evals(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "eval_loss" in r]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    rows = []
    for i in range(48):
        source = "abc"[i % 3]
        answer = {"a": "yes " * (1 + i % 4), "b": f"{i} apples", "c": "no"}[source]
        rows.append({"source": source, "messages": [
            {"role": "user", "content": f"question {i} of {source}"},
            {"role": "assistant", "content": answer}]})  # fmt: skip
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.slow
def test_eval_by_splits_the_validation_loss_without_changing_it(tmp_path, data):
    plain = _evals(_run(tmp_path, "plain", data, "collator=padding"))
    by_pad = _run(tmp_path, "by_pad", data, "collator=padding", "data.eval_by=source")
    by_pack = _run(tmp_path, "by_pack", data, "collator=packing", "data.eval_by=source")
    pad, pack = _evals(by_pad), _evals(by_pack)
    assert [r["step"] for r in pad] == [0, 2] and "eval_loss_by" not in plain[0]
    for p, q in zip(plain, pad):
        assert set(q["eval_loss_by"]) == {"a", "b", "c"}
        assert q["eval_loss"] == pytest.approx(p["eval_loss"], rel=1e-6)
        assert q["eval_tokens"] == p["eval_tokens"]
        assert len(set(q["eval_loss_by"].values())) == 3  # three different numbers
    for name, value in pad[0]["eval_loss_by"].items():  # same weights at step 0
        assert pack[0]["eval_loss_by"][name] == pytest.approx(value, rel=1e-5)
    summary = json.loads((by_pad / "summary.json").read_text())
    assert summary["final_eval_loss_by"] == pad[-1]["eval_loss_by"]
