"""Build `report.md` and its PNG figures from one or more training run directories.

    report = build_report(["runs/padding", "runs/random", "runs/greedy"], "reports/lima")

Invariant: every number in the report is read from the runs' files (metrics.jsonl, summary.json,
config.yaml, eval/summary.json); nothing is estimated. Values a summary lacks but metrics.jsonl
has are marked as derived in the report's notes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from sft.errors import UserError
from sft.report import figures
from sft.report.groups import group_table, write_groups
from sft.report.runs import Run, load_run
from sft.report.tables import benchmark_table, ordered_columns, ordered_tasks, run_table


def _figures(runs: list[Run], out: Path, smooth: float) -> list[tuple[str, Path]]:
    colors = figures.run_colors(runs)
    made = [
        ("Training loss", figures.plot_train_loss(runs, colors, out / "train_loss.png", smooth)),
        ("Eval loss", figures.plot_eval_loss(runs, colors, out / "eval_loss.png")),
        ("Throughput", figures.plot_throughput(runs, colors, out / "throughput.png")),
        (
            "Optimizer steps and wall time",
            figures.plot_steps_wall(runs, colors, out / "steps_wall.png"),
        ),
        ("Padding and pack efficiency", figures.plot_padding(runs, colors, out / "padding.png")),
        (
            "Benchmarks",
            figures.plot_benchmarks(
                ordered_tasks(runs),
                ordered_columns([r for r in runs if r.benchmarks]),
                colors,
                out / "benchmarks.png",
            ),
        ),
    ]
    return [(title, path) for title, path in made if path is not None]


def _notes(runs: list[Run]) -> list[str]:
    notes = []
    for run in runs:
        if run.derived:
            notes.append(
                f"`{run.name}`: {', '.join(run.derived)} taken from metrics.jsonl (not in summary.json)."
            )
        if run.skipped_lines:
            notes.append(
                f"`{run.name}`: {run.skipped_lines} unreadable line(s) in metrics.jsonl skipped."
            )
        if not run.summary.get("run_name") and not (run.path / "summary.json").is_file():
            notes.append(f"`{run.name}`: no summary.json (run unfinished?).")
    return notes


def build_report(
    run_dirs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    smooth: float = 0.8,
    by: Sequence[str] = (),
) -> Path:
    """Write `out_dir/report.md` and its figures for `run_dirs`; return the report's path.
    `by`: config keys whose values group the runs (sft/report/groups.py)."""
    if not run_dirs:
        raise UserError("give at least one run directory")
    if not 0 <= smooth < 1:
        raise UserError(f"--smooth must be in [0, 1), got {smooth}")
    runs = [load_run(d) for d in run_dirs]
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        for run in runs:  # same run_name twice (e.g. two seeds): tell them apart by folder
            if names.count(run.name) > 1:
                run.name = f"{run.name} [{run.path.name}]"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    made = _figures(runs, out, smooth)

    lines = [
        "# Training report",
        "",
        (
            f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by `sft-report` from "
            f"{len(runs)} run(s):"
        ),
        "",
    ]
    lines += [f"- `{r.name}`: {r.path} ({r.column})" for r in runs]
    table, table_notes = benchmark_table(runs)
    lines += ["", "## Benchmarks", ""]
    if table:
        lines += [table, ""] + [f"- {n}" for n in table_notes]
    else:
        lines.append("No run has benchmark results yet (run `sft-eval RUN_DIR --tasks ...`).")
    lines += ["", "## Runs", "", run_table(runs), ""]
    lines += [
        (
            "padding ratio = tokens computed (with padding) / real tokens; padding fraction = "
            "padding / tokens computed; pack efficiency = real tokens / packed-row capacity."
        ),
    ]
    if by:
        written = write_groups(runs, by, out)
        lines += ["", f"## Groups (by {', '.join(by)})", "", group_table(runs, by), ""]
        note = "Mean ± sample standard deviation over the runs of each group (no spread for one "
        lines += [note + "run); `runs` = how many. Also groups.csv and groups.json.", ""]
        if out / "groups.png" in written:
            lines += ["![groups](groups.png)", ""]
    lines += ["", "## Figures", ""]
    for title, path in made:
        lines += [f"### {title}", "", f"![{title}]({path.name})", ""]
    notes = _notes(runs)
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    report = out / "report.md"
    report.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    return report
