"""Synthetic run directories in the layout the trainer writes (see sft/report/runs.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

SETUPS = {
    # name: (collator, strategy, optimizer steps, tokens/s, padding ratio, pack efficiency)
    "lima-padding": ("padding", None, 120, 900.0, 2.45, None),
    "lima-random": ("packing", "random_concat", 45, 2100.0, 1.0, 1.0),
    "lima-greedy": ("packing", "bfd", 42, 2050.0, 1.0, 0.985),
}
BENCH = {  # name: {task: accuracy}
    "lima-padding": {"mmlu": 0.41, "gsm8k": 0.12, "bbh": 0.30},
    "lima-random": {"mmlu": 0.42, "gsm8k": 0.14, "bbh": 0.31},
    "lima-greedy": {"mmlu": 0.43, "gsm8k": 0.15},
}


def _label(collator: str, strategy: str | None) -> str:
    from sft.batching import label_of

    return label_of({"name": collator, **({"strategy": strategy} if strategy else {})})


def write_run(root: Path, name: str, *, evals: bool = True, bench: bool = True) -> Path:
    collator, strategy, steps, tps, ratio, eff = SETUPS[name]
    run = root / name
    run.mkdir(parents=True)
    collator_yaml = f"collator:\n  name: {collator}\n" + (
        f"  strategy: {strategy}\n" if strategy else ""
    )
    (run / "config.yaml").write_text(
        f"run_name: {name}\nseed: 0\nmodel:\n  name_or_path: tiny\n{collator_yaml}"
    )
    tokens_per_step = 600_000 / steps
    lines, total = [], 0
    for step in range(1, steps + 1):
        total += tokens_per_step
        loss = 1.2 + 1.3 * math.exp(-total / 150_000) + 0.08 * math.sin(step * 1.7)
        row = {
            "step": step,
            "epoch": step / steps * 3,
            "loss": loss,
            "lr": 1e-5,
            "grad_norm": 1.0,
            "samples": 8,
            "tokens": tokens_per_step * ratio,
            "supervised_tokens": tokens_per_step,
            "pad_tokens": tokens_per_step * (ratio - 1),
            "tokens_per_s": tps,
            "samples_per_s": tps / 700,
            "elapsed_s": step * tokens_per_step / tps,
            "total_tokens": total * ratio,
            "total_supervised_tokens": total,
            "total_samples": step * 8,
        }
        if eff is not None:
            row["pack_efficiency"] = eff
        lines.append(json.dumps(row))
        if evals and step % (steps // 3) == 0:
            lines.append(json.dumps({"step": step, "eval_loss": loss + 0.1, "eval_tokens": 5000}))
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    summary = {
        "run_name": name,
        "collator": collator,
        "strategy": strategy,
        "batching": {
            "collator": collator,
            "strategy": strategy,
            "label": _label(collator, strategy),
        },
        "model": "tiny",
        "steps": steps,
        "epochs": 3,
        "world_size": 1,
        "wall_s": steps * tokens_per_step / tps,
        "train_tokens": total,
        "supervised_tokens": total,
        "pad_tokens": total * (ratio - 1),
        "samples": steps * 8,
        "padding_ratio": ratio,
        "pack_efficiency": eff,
        "tokens_per_s": tps,
        "samples_per_s": tps / 700,
        "peak_memory_mb": 2048,
        "final_loss": loss,
        "final_eval_loss": loss + 0.1,
        "steps_per_epoch": steps / 3,
    }
    (run / "summary.json").write_text(json.dumps(summary))
    if bench:
        entries = [
            {
                "task": t,
                "metric": "acc,none",
                "value": v,
                "stderr": 0.01,
                "n": 100,
                "limit": None,
                "num_fewshot": 5,
                "model": str(run / "final"),
                "timestamp": "2026-01-01T00:00:00+00:00",
            }
            for t, v in BENCH[name].items()
        ]
        (run / "eval").mkdir()
        (run / "eval" / "summary.json").write_text(json.dumps(entries))
    return run


@pytest.fixture
def three_runs(tmp_path: Path) -> list[Path]:
    return [write_run(tmp_path / "runs", name) for name in SETUPS]
