"""Smoke runs of the generation benchmarks (BBH, MATH, HumanEval, IFEval) on a tiny random model.

A random model scores ~0; these tests prove that each offline config loads its local data, that
lm_eval generates and scores through our hooks, and that the result files are complete.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sft.eval import evaluate


@pytest.mark.slow
def test_bbh_math_humaneval_run_end_to_end(
    tiny_model_dir: Path, eval_data: Path, tmp_path: Path
) -> None:
    tasks = ["bbh_navigate", "math500", "humaneval"]
    entries = evaluate(
        tiny_model_dir,
        tasks,
        limit=1,
        out_dir=tmp_path,
        batch_size=1,
        device="cpu",
        allow_code_execution=True,
        max_gen_toks=8,
        log_samples=True,
    )
    assert set(entries) == set(tasks)
    shots = {name: e["num_fewshot"] for name, e in entries.items()}
    assert shots == {"bbh_navigate": 3, "math500": 4, "humaneval": 0}
    for name, e in entries.items():
        assert e["n"] == 1 and 0.0 <= e["value"] <= 1.0
        record = json.loads((tmp_path / f"{name}.json").read_text())
        (sample,) = record["samples"][e["lm_eval_task"]]
        assert sample["resps"], name


def _punkt_model(root: Path) -> None:
    """A Punkt sentence model trained on a few sentences (IFEval needs one; NLTK's own is online)."""
    from nltk.tokenize.punkt import PunktTrainer, save_punkt_params

    trainer = PunktTrainer()
    trainer.train(
        "Write a poem. Use no commas! Is it long? Dr. Smith wrote it. " * 20, finalize=True
    )
    target = root / "tokenizers" / "punkt_tab" / "english"
    target.mkdir(parents=True)
    save_punkt_params(trainer.get_params(), dir=str(target))


@pytest.mark.slow
def test_ifeval_runs_with_a_punkt_model(
    tiny_model_dir: Path, eval_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("langdetect")
    pytest.importorskip("immutabledict")
    import nltk

    monkeypatch.setenv("NLTK_DATA", str(tmp_path / "nltk"))
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "nltk"), *nltk.data.path])
    _punkt_model(tmp_path / "nltk")
    entries = evaluate(
        tiny_model_dir, ["ifeval"], limit=2, out_dir=tmp_path / "out", device="cpu", max_gen_toks=8
    )
    e = entries["ifeval"]
    assert (
        e["metric"] == "prompt_level_strict_acc,none" and e["n"] == 2 and 0.0 <= e["value"] <= 1.0
    )
    record = json.loads((tmp_path / "out" / "ifeval.json").read_text())
    assert {"inst_level_loose_acc,none", "prompt_level_loose_acc,none"} <= set(
        record["results"]["sft_ifeval"]
    )


def test_ifeval_without_punkt_is_one_clear_error(
    tiny_model_dir: Path, eval_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("langdetect")
    pytest.importorskip("immutabledict")
    import nltk

    from sft.errors import UserError

    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "empty")])
    with pytest.raises(UserError, match="punkt_tab"):
        evaluate(tiny_model_dir, ["ifeval"], limit=1, out_dir=tmp_path / "out", device="cpu")
