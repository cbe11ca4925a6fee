"""`make demo` (sft.demo): both setups train the same rows, the report and the table come out.

The accuracy gain itself is a measurement on SmolLM2 (README, docs/getting-started.md); here the
pipeline runs end to end with the tiny model standing in for the fetched one.
"""

from __future__ import annotations

import json

import pytest

from sft import demo
from sft.cli_config import compose_job
from sft.data.demo_facts import FACT_TASKS


def test_eval_prompts_are_held_out_fact_tasks():
    tasks = demo.demo_tasks()
    rows = demo.exact_match_prompts(24, tasks)
    assert len(rows) == 24
    assert {r["task"] for r in rows} == set(FACT_TASKS) & set(tasks)
    from sft.data.demo import generate_demo

    train_prompts = {r["messages"][0]["content"] for r in generate_demo(2000, 1234, tasks)}
    assert not train_prompts & {r["messages"][0]["content"] for r in rows}


@pytest.mark.parametrize("setup", list(demo.SETUPS))
def test_every_setup_composes_with_the_demo_experiment(setup, tmp_path):
    job, _ = compose_job(["experiment=demo", *demo.SETUPS[setup], f"run_dir={tmp_path}"])
    assert job.collator.name == setup
    assert job.train.epochs == 1 and job.data.demo_size == 200


def test_demo_end_to_end_with_the_tiny_model(tmp_path, monkeypatch, capsys):
    from sft.models.tiny import build_tiny_model, build_tiny_tokenizer

    base = tmp_path / "base"
    build_tiny_model().save_pretrained(base)
    build_tiny_tokenizer().save_pretrained(base)
    monkeypatch.setattr("sft.models.smollm2.ensure_smollm2", lambda: base)
    monkeypatch.setenv("SFT_DEMO_RUN_DIR", str(tmp_path / "demo"))
    monkeypatch.setenv("SFT_DEMO_EVAL", "6")
    demo.main(
        [
            "model=tiny",
            "data.demo_size=40",
            "data.max_length=4096",
            "model.dtype=fp32",
            "train.progress=false",
        ]
    )
    out = capsys.readouterr().out
    result = json.loads((tmp_path / "demo" / "demo.json").read_text())
    pad, pack = (result["runs"][n]["summary"] for n in ("padding", "packing"))
    assert pad["samples"] == pack["samples"] == pad["data"]["train_pieces"]
    assert pack["pad_tokens"] == 0 < pad["pad_tokens"]
    assert pad["steps"] > pack["steps"]
    assert result["before"]["n"] == result["after"]["packing"]["n"] == 6
    assert len(result["runs"]["packing"]["evals"]) >= 2  # a validation loss curve
    assert (tmp_path / "demo" / "report" / "eval_loss.png").is_file()
    for row in ("optimizer steps", "real tokens/s", "val loss curve", "exact match (held out)"):
        assert row in out
