"""Read one training run directory into plain Python data for the report.

A run dir holds `metrics.jsonl` (required), and optionally `summary.json`, `config.yaml` and
`eval/summary.json` (written by `sft-eval`). Training lines of metrics.jsonl carry `loss`;
evaluation lines carry `eval_loss` and no `loss`.

Invariant: every optional key may be missing; a missing value is `None`, never invented. The
only hard errors are a missing folder or a missing/empty metrics.jsonl, each one `UserError` line.
Values that the summary lacks are taken from metrics.jsonl when it has them (last step, final
losses, wall time), and say so in `derived`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sft.errors import UserError


@dataclass
class Run:
    """One run, as the report sees it.

    name: run_name (config or summary), else the folder name.
    column: the benchmark-table column ("padding", "random packing", "greedy packing", or name).
    collator, strategy: from config.yaml (`collator._name`/`collator.name`, `collator.strategy`),
        else summary.json.
    train, evals: the training and evaluation lines of metrics.jsonl, in file order.
    summary: summary.json (empty when absent); benchmarks: eval/summary.json entries by task.
    skipped_lines: unparsable metrics lines (e.g. a line cut by a killed job).
    """

    path: Path
    name: str
    column: str
    collator: str | None
    strategy: str | None
    train: list[dict]
    evals: list[dict]
    summary: dict
    config: dict
    benchmarks: dict[str, dict]
    skipped_lines: int = 0
    derived: list[str] = field(default_factory=list)

    def stat(self, key: str) -> float | None:
        """A numeric summary value, or None."""
        return _num(self.summary.get(key))


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def column_label(summary: dict, collator: dict, name: str) -> str:
    """The paper's column for a run (padding / random packing / greedy packing): its batching
    choice's label from summary.json, else from config.yaml's `collator:`, else its name."""
    from sft.batching import label_of

    label = (summary.get("batching") or {}).get("label") or label_of(collator)
    return str(label) if label else name


def _read_metrics(path: Path) -> tuple[list[dict], list[dict], int]:
    train: list[dict] = []
    evals: list[dict] = []
    skipped = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            skipped += 1
            continue
        if not isinstance(row, dict):
            skipped += 1
        elif _num(row.get("loss")) is not None:
            train.append(row)
        elif _num(row.get("eval_loss")) is not None:
            evals.append(row)
    return train, evals, skipped


def _read_json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from None


def _read_config(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise UserError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    return data if isinstance(data, dict) else {}


def _benchmarks(run_dir: Path) -> dict[str, dict]:
    data = _read_json(run_dir / "eval" / "summary.json")
    if isinstance(data, dict):
        data = list(data.values())
    return {e["task"]: e for e in data or [] if isinstance(e, dict) and "task" in e}


def load_run(run_dir: str | Path) -> Run:
    """Read `run_dir`; fill summary gaps from metrics.jsonl (recorded in `Run.derived`)."""
    path = Path(run_dir)
    if not path.is_dir():
        raise UserError(f"{path} is not a run directory (no such folder)")
    metrics = path / "metrics.jsonl"
    if not metrics.is_file():
        raise UserError(f"{path} has no metrics.jsonl; is it a training run directory?")
    train, evals, skipped = _read_metrics(metrics)
    if not train and not evals:
        raise UserError(f"{metrics} holds no training or eval lines")
    summary = _read_json(path / "summary.json") or {}
    config = _read_config(path / "config.yaml")
    collator_cfg = config.get("collator") if isinstance(config.get("collator"), dict) else {}
    collator = collator_cfg.get("_name") or collator_cfg.get("name") or summary.get("collator")
    strategy = collator_cfg.get("strategy") or summary.get("strategy")
    if summary.get("batching"):
        strategy = summary["batching"].get("strategy")
    name = str(config.get("run_name") or summary.get("run_name") or path.name)
    run = Run(
        path=path,
        name=name,
        column=column_label(summary, collator_cfg, name),
        collator=collator,
        strategy=strategy,
        train=train,
        evals=evals,
        summary=dict(summary),
        config=config,
        benchmarks=_benchmarks(path),
        skipped_lines=skipped,
    )
    _fill_from_metrics(run)
    return run


def _fill_from_metrics(run: Run) -> None:
    last = run.train[-1] if run.train else {}
    fallbacks = {
        "steps": last.get("step"),
        "epochs": last.get("epoch"),
        "final_loss": last.get("loss"),
        "final_eval_loss": run.evals[-1].get("eval_loss") if run.evals else None,
        "wall_s": last.get("elapsed_s"),
        "supervised_tokens": last.get("total_supervised_tokens"),
        "samples": last.get("total_samples"),
        "train_tokens": last.get("total_tokens"),
    }
    rates = {
        key: [r[key] for r in run.train if _num(r.get(key)) is not None]
        for key in ("tokens_per_s", "samples_per_s", "pack_efficiency")
    }
    for key, values in rates.items():
        fallbacks[key] = sum(values) / len(values) if values else None
    for key, value in fallbacks.items():
        if run.stat(key) is None and _num(value) is not None:
            run.summary[key] = value
            run.derived.append(key)
