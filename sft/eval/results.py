"""Condense lm_eval's result dict into one summary entry per benchmark, and write result files.

Files, in the results folder:
- `<task>.json`: lm_eval's own output for that benchmark (its results, sub-task results, configs,
  shot counts, sample counts, versions) plus the summary entry; per-sample records when asked.
- `summary.json`: a JSON list with one entry per benchmark ever evaluated into this folder:
  `task, lm_eval_task, metric, value, stderr, n, limit, num_fewshot, model, chat_template,
  source, timestamp`. A new run of a benchmark replaces its entry; others are kept.

Invariant: `value` is copied from lm_eval's results under the benchmark's headline metric key
(or the one key with that metric name, for stock tasks that name their filter differently),
never recomputed; `n` is the number of documents lm_eval actually scored (summed over sub-tasks).
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sft.errors import UserError
from sft.eval.registry import Benchmark

SUMMARY = "summary.json"


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _leaf_tasks(results: dict, name: str) -> list[str]:
    """The scored (leaf) tasks under `name`: itself, or its group's members, recursively."""
    subtasks = results.get("group_subtasks", {}).get(name)
    if not subtasks:
        return [name]
    leaves: list[str] = []
    for sub in subtasks:
        leaves.extend(_leaf_tasks(results, sub))
    return leaves


def summary_entry(
    results: dict,
    bench: Benchmark,
    task: str,
    *,
    model: str,
    limit: float | None,
    chat_template: bool,
    source: str,
) -> dict:
    """The headline numbers of benchmark `bench`, run as lm_eval task `task`."""
    scores = results["results"].get(task) or {}
    key = bench.metric_key
    if key not in scores:  # stock tasks (--hub) may name the filter differently
        same_metric = [k for k in scores if k.split(",")[0] == bench.metric]
        if len(same_metric) != 1:
            found = sorted(k for k in scores if "," in k)
            raise UserError(f"{bench.name}: lm_eval returned no {key!r} for {task} (got {found})")
        key = same_metric[0]
    metric, _, filter_name = key.partition(",")
    leaves = _leaf_tasks(results, task)
    n_samples = results.get("n-samples", {})
    n = sum(int(n_samples.get(t, {}).get("effective", 0)) for t in leaves)
    shots = {results.get("n-shot", {}).get(t) for t in leaves} - {None}
    stderr_key = f"{metric}_stderr,{filter_name}"
    return {
        "task": bench.name,
        "lm_eval_task": task,
        "metric": key,
        "value": _number(scores[key]),
        "stderr": _number(scores.get(stderr_key)),
        "n": n,
        "limit": limit,
        "num_fewshot": shots.pop() if len(shots) == 1 else sorted(shots),
        "model": model,
        "chat_template": chat_template,
        "source": source,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def task_record(results: dict, task: str, entry: dict, with_samples: bool) -> dict:
    """lm_eval's output restricted to `task` and its sub-tasks, plus our summary entry."""
    names = {task, *_leaf_tasks(results, task), *results.get("group_subtasks", {}).get(task, [])}
    keep = lambda d: {k: v for k, v in (d or {}).items() if k in names}
    record = {
        "summary": entry,
        "results": keep(results.get("results")),
        "groups": keep(results.get("groups")),
        "group_subtasks": keep(results.get("group_subtasks")),
        "configs": keep(results.get("configs")),
        "versions": keep(results.get("versions")),
        "n-shot": keep(results.get("n-shot")),
        "n-samples": keep(results.get("n-samples")),
        "higher_is_better": keep(results.get("higher_is_better")),
        "config": results.get("config"),
        "lm_eval_version": results.get("lm_eval_version"),
        "transformers_version": results.get("transformers_version"),
        "date": results.get("date"),
    }
    if with_samples:
        record["samples"] = keep(results.get("samples"))
    return record


def write_json(path: Path, obj: Any) -> None:
    """Write `obj` as indented JSON; objects JSON cannot hold (functions in configs) become str."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str, ensure_ascii=False) + "\n", "utf-8")
    tmp.replace(path)


def read_summary(out_dir: Path) -> list[dict]:
    """The entries of `out_dir/summary.json`, or [] when there is none yet."""
    path = out_dir / SUMMARY
    if not path.is_file():
        return []
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, dict):  # tolerate {"task": entry} written by hand
        data = list(data.values())
    return [e for e in data if isinstance(e, dict) and "task" in e]


def update_summary(out_dir: Path, entries: list[dict]) -> list[dict]:
    """Merge `entries` into `out_dir/summary.json` (same task -> replaced) and return the list."""
    new = {e["task"]: e for e in entries}
    merged = [e for e in read_summary(out_dir) if e["task"] not in new] + entries
    write_json(out_dir / SUMMARY, merged)
    return merged
