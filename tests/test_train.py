"""`python sft/train.py model=tiny data=demo train.max_steps=4` writes the run-directory contract."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "sft" / "train.py"
SMALL = ["model=tiny", "data=demo", "data.demo_size=300", "train.progress=false"]
STEP_KEYS = {
    "step",
    "epoch",
    "loss",
    "lr",
    "grad_norm",
    "samples",
    "tokens",
    "supervised_tokens",
    "pad_tokens",
    "tokens_per_s",
    "samples_per_s",
    "elapsed_s",
}
SUMMARY_KEYS = {
    "run_name",
    "collator",
    "strategy",
    "model",
    "steps",
    "epochs",
    "world_size",
    "wall_s",
    "train_tokens",
    "supervised_tokens",
    "pad_tokens",
    "samples",
    "padding_ratio",
    "pack_efficiency",
    "tokens_per_s",
    "samples_per_s",
    "peak_memory_mb",
    "final_loss",
    "final_eval_loss",
    "steps_per_epoch",
}


def run(args, cwd=ROOT, timeout=300):
    return subprocess.run(
        [sys.executable, str(TRAIN), *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        timeout=timeout,
    )


@pytest.mark.slow
@pytest.mark.parametrize("collator", ["padding", "packing"])
def test_run_directory_contract(tmp_path, collator):
    run_dir = tmp_path / "run"
    proc = run(
        [
            *SMALL,
            f"collator={collator}",
            "train.max_steps=4",
            "train.eval_at_start=true",
            f"run_dir={run_dir}",
        ]
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (run_dir / "config.yaml").read_text().startswith("seed: 0")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    for r in steps:
        assert STEP_KEYS <= set(r)
        assert r["tokens"] > 0 and r["supervised_tokens"] > 0
    assert rows[0]["step"] == 0 and "eval_loss" in rows[0]
    if collator == "packing":
        assert all("pack_efficiency" in r for r in steps)
        assert all(r["pad_tokens"] == 0 for r in steps)  # varlen: one flattened row, no padding
    summary = json.loads((run_dir / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary)
    assert summary["steps"] == 4 and summary["collator"] == collator
    assert list((run_dir / "tb").rglob("events.out.tfevents.*"))  # report_to=[tensorboard]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(run_dir / "final")
    tok = AutoTokenizer.from_pretrained(run_dir / "final")
    assert tok.chat_template and model.config.num_hidden_layers == 2


@pytest.mark.slow
def test_loss_falls_on_tiny_model(tmp_path):
    run_dir = tmp_path / "run"
    proc = run(
        [
            *SMALL,
            "collator=packing",
            "train.max_steps=30",
            "optim.lr=3e-3",
            "optim.warmup_ratio=0",
            "train.micro_batch_size=2",
            f"run_dir={run_dir}",
        ]
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    losses = [
        json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5


@pytest.mark.parametrize(
    "args,needle",
    [
        (
            ["data=file", "data.path=/nonexistent/file.jsonl"],
            "data.path=/nonexistent/file.jsonl does not exist",
        ),
        (["data.path=my.jsonl"], "with data=demo would keep the demo's settings"),
        (
            ["model.name_or_path=/nonexistent/model"],
            "model.name_or_path=/nonexistent/model does not exist",
        ),
        (["model=tiny", "model.attn_implementation=flash_attention_2"], "needs a CUDA GPU"),
    ],
)
def test_bad_input_is_one_line_without_traceback(tmp_path, args, needle):
    proc = run(["model=tiny", "data=demo", "data.demo_size=50", *args, f"run_dir={tmp_path / 'r'}"])
    assert proc.returncode == 2, proc.stderr[-2000:]
    err_lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(err_lines) == 1 and needle in err_lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_malformed_json_line_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    good = json.dumps(
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    )
    bad.write_text(f"{good}\n{good}\n{{broken\n")
    proc = run(
        [
            "model=tiny",
            "data=file",
            f"data.path={bad}",
            "data.format=auto",
            f"run_dir={tmp_path / 'r'}",
        ]
    )
    assert proc.returncode == 2
    assert f"{bad}:3: bad row (malformed_json" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra",
    [
        ["model.lora.enabled=true", "model.lora.r=4"],
        ["model.gradient_checkpointing=true"],
        ["model.dtype=bf16"],
        ["model.arch=qwen2", "collator=packing"],
    ],
)
def test_model_options_train(tmp_path, extra):
    run_dir = tmp_path / "run"
    proc = run([*SMALL, "train.max_steps=2", *extra, f"run_dir={run_dir}"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 2
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(run_dir / "final")
    assert not any("lora" in n for n, _ in model.named_parameters())  # LoRA merged into final/


@pytest.mark.slow
def test_benchmarks_at_checkpoints_and_on_final(tmp_path, shared_data):
    run_dir = tmp_path / "run"
    proc = run(
        [
            *SMALL,
            "train.max_steps=4",
            "train.save_every=2",
            "train.benchmark_tasks=mmlu_anatomy",
            "train.benchmark_limit=2",
            f"run_dir={run_dir}",
        ],
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run_dir / "checkpoints" / "step-2" / "model" / "config.json").exists()
    step2 = json.loads((run_dir / "eval" / "step-2" / "summary.json").read_text())
    final = json.loads((run_dir / "eval" / "summary.json").read_text())
    for summary in (step2, final):
        entry = summary[0] if isinstance(summary, list) else summary
        assert entry["n"] == 2 and 0.0 <= entry["value"] <= 1.0


SWEEP = ["-m", "model=tiny", "data=demo", "data.demo_size=40", "data.overlong=drop"]


@pytest.mark.slow
def test_a_sweep_with_a_failing_job_exits_non_zero_with_a_table(tmp_path):
    proc = run(
        [*SWEEP, "data.max_length=512,64", "train.max_steps=2", f"hydra.sweep.dir={tmp_path}"]
    )
    assert proc.returncode == 2, proc.stderr[-2000:]  # job 1 keeps no sample at 64 tokens
    lines = proc.stdout.splitlines()
    assert "[sft] sweep: 2 job(s), 1 failed" in lines
    rows = [line.split() for line in lines[lines.index("  job  exit  overrides") + 1 :]]
    assert [r[:2] for r in rows] == [["0", "0"], ["1", "2"]]
    assert "data.max_length=64" in " ".join(rows[1])


def test_a_sweep_is_checked_before_its_first_job_runs(tmp_path):
    proc = run(
        [*SWEEP, "collator=packing,padding", "collator.strategy=ffd", f"hydra.sweep.dir={tmp_path}"]
    )
    assert proc.returncode == 2
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    assert err == [
        (
            "error: sweep job 1 (model=tiny data=demo data.demo_size=40 data.overlong=drop "
            "collator=padding collator.strategy=ffd): collator.strategy is not a key of "
            "collator=padding; it belongs to collator=packing or collator=leaky_packing"
        )
    ]
    assert not tmp_path.exists() or not any(tmp_path.iterdir())  # job 0 never started
