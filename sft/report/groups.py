"""`sft-report --by KEYS`: runs grouped by config keys, each metric as mean and spread over the
runs of a group (typically the seeds of one setting).

    sft-report outputs/lr/sweep-*/* --by collator.strategy,optim.lr_scaling --out reports/lr
    -> report.md "Groups" table, groups.csv, groups.json, groups.png (eval loss, mean +- std)

A key is a dotted path into the run's config.yaml (`collator.strategy`, `data.combine`,
`optim.lr_scaling`, `seed`, ...); a key a run's config lacks reads as "-" for that run.

Invariant: every value in the table is a mean (and sample standard deviation, n - 1) of numbers
read from the runs' own files; a group of one run shows its value and no spread, and the table
says how many runs each group holds, so one seed is never presented as a spread.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path

from sft.report.runs import Run

DASH = "–"
# (column, how to read it from a run); benchmark scores are added per task
METRICS = (
    ("eval loss", lambda r: r.stat("final_eval_loss")),
    ("train loss", lambda r: r.stat("final_loss")),
    ("steps", lambda r: r.stat("steps")),
    ("pack eff. %", lambda r: _pct(r.stat("pack_efficiency"))),
    ("samples/step", lambda r: r.stat("samples_per_step")),
    ("lr", lambda r: r.stat("lr")),
    ("tokens/s", lambda r: r.stat("tokens_per_s")),
)


def config_value(run: Run, key: str) -> str:
    """The value of a dotted config key in the run's config.yaml, as text ("-" when absent,
    '' when empty, e.g. `collator.group_by` without grouping)."""
    node = run.config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return "-"
        node = node[part]
    return str(node) if node != "" else "''"


def group_runs(runs: Sequence[Run], keys: Sequence[str]) -> dict[tuple[str, ...], list[Run]]:
    """Runs by their values of `keys`, groups in first-seen order."""
    groups: dict[tuple[str, ...], list[Run]] = {}
    for run in runs:
        groups.setdefault(tuple(config_value(run, k) for k in keys), []).append(run)
    return groups


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (None for the spread of fewer than two values)."""
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _metrics(runs: Sequence[Run]) -> list[tuple[str, object]]:
    tasks = sorted({t for r in runs for t in r.benchmarks})
    bench = [(f"{t} %", lambda r, t=t: _pct(r.benchmarks.get(t, {}).get("value"))) for t in tasks]
    present = [(name, get) for name, get in METRICS if any(get(r) is not None for r in runs)]
    values = sorted({v for r in runs for v in r.summary.get("final_eval_loss_by") or {}})
    by = [(f"eval loss {v}", lambda r, v=v: _by(r, v)) for v in values]  # data.eval_by
    return present[:1] + by + present[1:] + bench


def _by(run: Run, value: str) -> float | None:
    x = (run.summary.get("final_eval_loss_by") or {}).get(value)
    return float(x) if isinstance(x, (int, float)) else None


def _pct(v) -> float | None:
    return 100 * float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def _fmt(mean: float | None, std: float | None) -> str:
    if mean is None:
        return DASH
    digits = ".3g" if abs(mean) < 1e-2 else ".4g"
    text = format(mean, digits)
    return text if std is None else f"{text} ± {format(std, '.2g')}"


def group_rows(runs: Sequence[Run], keys: Sequence[str]) -> tuple[list[str], list[dict]]:
    """(metric names, one dict per group: key values, `runs`, and per metric mean/std/n)."""
    metrics = _metrics(runs)
    rows = []
    for values, members in group_runs(runs, keys).items():
        row = {"keys": dict(zip(keys, values)), "runs": [r.name for r in members]}
        for name, get in metrics:
            got = [v for v in (get(r) for r in members) if v is not None]
            mean, std = mean_std(got)
            row[name] = {"mean": mean, "std": std, "n": len(got)}
        rows.append(row)
    return [name for name, _ in metrics], rows


def group_table(runs: Sequence[Run], keys: Sequence[str]) -> str:
    """The markdown table: one row per group, mean ± std of every metric some run has."""
    names, rows = group_rows(runs, keys)
    head = [*keys, "runs", *names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(keys) + "---:|" * (1 + len(names))]
    for row in rows:
        cells = [*row["keys"].values(), str(len(row["runs"]))]
        cells += [_fmt(row[n]["mean"], row[n]["std"]) for n in names]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_groups(runs: Sequence[Run], keys: Sequence[str], out: Path) -> list[Path]:
    """groups.json, groups.csv and groups.png (when some run has an eval loss) under `out`."""
    names, rows = group_rows(runs, keys)
    (out / "groups.json").write_text(json.dumps({"by": list(keys), "groups": rows}, indent=1))
    with open(out / "groups.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*keys, "runs", *(f"{n} {s}" for n in names for s in ("mean", "std"))])
        for row in rows:
            stats = [row[n][s] for n in names for s in ("mean", "std")]
            w.writerow([*row["keys"].values(), len(row["runs"]), *stats])
    written = [out / "groups.json", out / "groups.csv"]
    figure = _plot(rows, keys, names, out / "groups.png")
    return written + ([figure] if figure else [])


def _plot(rows: list[dict], keys: Sequence[str], names: list[str], path: Path) -> Path | None:
    """The eval loss per group; beside it, with data.eval_by, the eval loss per value of the
    field, one bar per group (mean ± std over the group's runs)."""
    metric = "eval loss"
    if metric not in names or not any(r[metric]["mean"] is not None for r in rows):
        return None
    from sft.report.figures import STYLE, plt

    per_value = [n for n in names if n.startswith("eval loss ")]
    labels = ["\n".join(r["keys"].values()) for r in rows]
    with plt.rc_context(STYLE):
        width = max(5.0, 1.2 * len(rows) + 2)
        if per_value:
            fig, (ax, by) = plt.subplots(
                1, 2, figsize=(width + max(6.0, 0.5 * len(rows) * len(per_value) + 2), 4.5),
                gridspec_kw={"width_ratios": [width, max(6.0, len(rows) * len(per_value) / 2)]},
            )  # fmt: skip
            _plot_per_value(by, rows, per_value, [" / ".join(r["keys"].values()) for r in rows])
        else:
            fig, ax = plt.subplots(figsize=(width, 4))
        means = [r[metric]["mean"] or 0.0 for r in rows]
        errs = [r[metric]["std"] or 0.0 for r in rows]
        ax.bar(range(len(rows)), means, yerr=errs, capsize=4, color="tab:blue", alpha=0.8)
        ax.set_xticks(range(len(rows)), labels, fontsize=9)
        ax.set_ylabel(f"{metric} (mean ± std over runs)")
        ax.set_title(f"{metric} by\n{', '.join(keys)}", fontsize=10)
        lo = min(m - e for m, e in zip(means, errs))
        ax.set_ylim(bottom=max(0.0, lo - 0.1 * abs(lo)))
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
    return path


def _plot_per_value(ax, rows: list[dict], names: list[str], labels: list[str]) -> None:
    step = 0.8 / len(rows)
    lows = []
    for i, (row, label) in enumerate(zip(rows, labels)):
        means = [row[n]["mean"] for n in names]
        errs = [row[n]["std"] or 0.0 for n in names]
        xs = [j + (i - (len(rows) - 1) / 2) * step for j in range(len(names))]
        ax.bar(xs, [m or 0.0 for m in means], step, yerr=errs, capsize=2, label=label, alpha=0.85)
        lows += [m - e for m, e in zip(means, errs) if m is not None]
    ax.set_xticks(range(len(names)), [n[len("eval loss ") :] for n in names], fontsize=9)
    ax.set_ylabel("eval loss per value (mean ± std)")
    ax.set_title("eval loss per value of data.eval_by", fontsize=10)
    if lows:
        ax.set_ylim(bottom=max(0.0, min(lows) - 0.1 * abs(min(lows))))
    ax.legend(fontsize=8)
