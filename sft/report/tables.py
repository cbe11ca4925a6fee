"""Markdown tables of the report: the benchmark table (the paper's layout) and the run table.

Benchmark table: one row per benchmark, one column per run column (padding, random packing,
greedy packing, then any other run by name), scores in %, and "Average" as the last row.

Invariant: the average of a column is taken over the benchmarks that every column has, so the
columns' averages compare like with like; a benchmark missing anywhere is named in a note.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from sft.report.figures import padding_fraction
from sft.report.runs import Run

TASK_ORDER = ("mmlu", "gsm8k", "math", "math500", "bbh", "ifeval", "humaneval")
COLUMN_ORDER = ("padding", "random packing", "greedy packing")
DASH = "–"


def _value(run: Run, task: str) -> float | None:
    v = run.benchmarks.get(task, {}).get("value")
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def ordered_columns(runs: Sequence[Run]) -> list[tuple[str, Run]]:
    """(label, run) in the paper's order; duplicate labels get the run name appended."""
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.column] = counts.get(run.column, 0) + 1
    labelled = [
        (run.column if counts[run.column] == 1 else f"{run.column} ({run.name})", run)
        for run in runs
    ]
    rank = {c: i for i, c in enumerate(COLUMN_ORDER)}
    return sorted(labelled, key=lambda lr: rank.get(lr[1].column, len(rank)))


def ordered_tasks(runs: Sequence[Run]) -> list[str]:
    tasks = {t for run in runs for t in run.benchmarks}
    known = [t for t in TASK_ORDER if t in tasks]
    return known + sorted(tasks - set(known))


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def benchmark_table(runs: Sequence[Run]) -> tuple[str, list[str]]:
    """The markdown benchmark table and its notes; ("", []) when no run has eval results."""
    tasks = ordered_tasks(runs)
    columns = ordered_columns([r for r in runs if r.benchmarks])
    if not tasks or not columns:
        return "", []
    lines = [
        _row(["benchmark", *[label for label, _ in columns]]),
        _row(["---"] + ["---:"] * len(columns)),
    ]
    complete = [t for t in tasks if all(_value(run, t) is not None for _, run in columns)]
    for task in tasks:
        values = [_value(run, task) for _, run in columns]
        best = max((v for v in values if v is not None), default=None)
        cells = []
        for v in values:
            text = DASH if v is None else f"{100 * v:.2f}"
            cells.append(
                f"**{text}**" if v is not None and v == best and len(columns) > 1 else text
            )
        lines.append(_row([task, *cells]))
    averages = []
    for _, run in columns:
        vals = [_value(run, t) for t in complete]
        averages.append(f"{100 * sum(vals) / len(vals):.2f}" if vals else DASH)
    lines.append(_row(["**Average**", *averages]))
    notes = []
    missing = [t for t in tasks if t not in complete]
    if missing:
        notes.append(
            f"Average over {', '.join(complete) or 'no benchmark'}; not in every run: {', '.join(missing)}."
        )
    limits = sorted(
        {str(e.get("limit")) for _, r in columns for e in r.benchmarks.values() if e.get("limit")}
    )
    if limits:
        notes.append(
            f"Evaluated on subsets (--limit {', '.join(limits)} documents per task): "
            "not comparable with full-test-set numbers."
        )
    metrics = sorted(
        {
            f"{t}: {e.get('metric')}, {e.get('num_fewshot')}-shot"
            for _, r in columns
            for t, e in r.benchmarks.items()
        }
    )
    if metrics:
        notes.append("Metrics: " + "; ".join(metrics) + ".")
    return "\n".join(lines), notes


def _fmt(value: float | None, spec: str) -> str:
    return DASH if value is None else format(value, spec)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return DASH
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def run_table(runs: Sequence[Run]) -> str:
    """One row per run: setup, steps, time, throughput, padding, efficiency, memory, losses."""
    header = [
        "run",
        "column",
        "collator",
        "steps",
        "epochs",
        "wall time",
        "tokens/s",
        "samples/s",
        "padding ratio",
        "padding fraction",
        "pack efficiency",
        "peak mem (MB)",
        "final loss",
        "final eval loss",
    ]
    lines = [_row(header), _row(["---", "---", "---"] + ["---:"] * (len(header) - 3))]
    for run in runs:
        collator = run.collator or DASH
        if run.strategy:
            collator += f" ({run.strategy})"
        frac, eff = padding_fraction(run), run.stat("pack_efficiency")
        lines.append(
            _row(
                [
                    run.name,
                    run.column,
                    collator,
                    _fmt(run.stat("steps"), ",.0f"),
                    _fmt(run.stat("epochs"), ".2f"),
                    _duration(run.stat("wall_s")),
                    _fmt(run.stat("tokens_per_s"), ",.0f"),
                    _fmt(run.stat("samples_per_s"), ",.2f"),
                    _fmt(run.stat("padding_ratio"), ".2f"),
                    DASH if frac is None else f"{frac:.1%}",
                    DASH if eff is None else f"{eff:.1%}",
                    _fmt(run.stat("peak_memory_mb"), ",.0f"),
                    _fmt(run.stat("final_loss"), ".4f"),
                    _fmt(run.stat("final_eval_loss"), ".4f"),
                ]
            )
        )
    return "\n".join(lines)
