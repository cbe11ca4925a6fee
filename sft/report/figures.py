"""The report's figures (matplotlib, Agg backend): one function per PNG, plain data in.

Every function takes the runs (or their numbers), a colour per run and an output path, and
returns the path written, or None when no run has the data the figure needs (no empty figures).
Invariant: a run has the same colour in every figure; axes say what is plotted and in which unit.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import EngFormatter, PercentFormatter

from sft.report.runs import Run

STYLE = {
    "figure.dpi": 110,
    "savefig.dpi": 150,
    "font.size": 11,
    "axes.titlesize": 13,
    "axes.titleweight": "bold",
    "axes.labelsize": 11,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.fontsize": 10,
    "legend.frameon": False,
}


def run_colors(runs: Sequence[Run]) -> dict[str, str]:
    """One tab10 colour per run name, in run order."""
    palette = plt.get_cmap("tab10").colors
    return {
        run.name: matplotlib.colors.to_hex(palette[i % len(palette)]) for i, run in enumerate(runs)
    }


def ema(xs: Sequence[float], ys: Sequence[float], span: float) -> list[float]:
    """Debiased exponential moving average with a time constant of `span` x-units.

    Decaying by x distance (not by point count) smooths every run over the same number of
    tokens, so a run with fewer, larger steps (packing) does not look lagged. span 0 = raw.
    """
    if span <= 0:
        return list(ys)
    out, acc, norm, prev = [], 0.0, 0.0, None
    for x, y in zip(xs, ys):
        decay = 0.0 if prev is None else math.exp(-max(x - prev, 0.0) / span)
        acc = decay * acc + (1 - decay) * y if prev is not None else y
        norm = decay * norm + (1 - decay) if prev is not None else 1.0
        out.append(acc / norm)
        prev = x
    return out


def smoothing_span(runs: Sequence[Run], weight: float) -> float:
    """The x span matching a per-point EMA `weight` on the densest run (0 when weight is 0)."""
    if weight <= 0:
        return 0.0
    steps = []
    for run in runs:
        xs, _ = _tokens_axis(run)
        gaps = sorted(b - a for a, b in itertools.pairwise(xs) if b > a)
        if gaps:
            steps.append(gaps[len(gaps) // 2])
    if not steps:
        return 0.0
    return -min(steps) / math.log(weight)


def _tokens_axis(run: Run) -> tuple[list[float], str]:
    """x values of the training lines: cumulative supervised tokens, else optimizer steps."""
    rows = run.train
    if rows and all(isinstance(r.get("total_supervised_tokens"), (int, float)) for r in rows):
        return [float(r["total_supervised_tokens"]) for r in rows], "tokens"
    if rows and all(isinstance(r.get("supervised_tokens"), (int, float)) for r in rows):
        total, xs = 0.0, []
        for r in rows:
            total += r["supervised_tokens"]
            xs.append(total)
        return xs, "tokens"
    return [float(r.get("step", i + 1)) for i, r in enumerate(rows)], "steps"


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return path


def plot_train_loss(
    runs: Sequence[Run], colors: dict[str, str], path: Path, smooth: float
) -> Path | None:
    """Training loss against supervised tokens seen, runs overlaid (raw faint, smoothed bold)."""
    runs = [r for r in runs if r.train]
    if not runs:
        return None
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(9, 5.2))
        token_axis = all(_tokens_axis(run)[1] == "tokens" for run in runs)
        span = smoothing_span(runs, smooth)
        for run in runs:
            xs = (
                _tokens_axis(run)[0]
                if token_axis
                else [float(r.get("step", i + 1)) for i, r in enumerate(run.train)]
            )
            ys = [float(r["loss"]) for r in run.train]
            c = colors[run.name]
            if span > 0:
                ax.plot(xs, ys, color=c, alpha=0.25, linewidth=1)
                ax.plot(xs, ema(xs, ys, span), color=c, linewidth=2.2, label=run.name)
            else:
                ax.plot(xs, ys, color=c, linewidth=1.8, label=run.name)
        ax.set_xlabel("supervised tokens seen" if token_axis else "optimizer step")
        if token_axis:
            ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        ax.set_ylabel("training loss (nats / supervised token)")
        title = "Training loss vs supervised tokens" if token_axis else "Training loss vs step"
        unit = "tokens" if token_axis else "steps"
        span_text = EngFormatter(places=0, sep="")(span) if token_axis else f"{span:.2g}"
        ax.set_title(title)
        legend = ax.legend(
            loc="upper right", title=f"EMA over {span_text} {unit}, raw faint" if span > 0 else None
        )
        legend.get_title().set_fontsize(9)
        return _save(fig, path)


def _tokens_at_step(run: Run, step: float) -> float | None:
    """Cumulative supervised tokens at the last training line with step <= `step`."""
    xs, unit = _tokens_axis(run)
    if unit != "tokens":
        return None
    best = None
    for row, x in zip(run.train, xs):
        if isinstance(row.get("step"), (int, float)) and row["step"] <= step:
            best = x
    return best


def plot_eval_loss(runs: Sequence[Run], colors: dict[str, str], path: Path) -> Path | None:
    """Eval loss against supervised tokens seen (left) and optimizer step (right)."""
    runs = [r for r in runs if r.evals]
    if not runs:
        return None
    with plt.rc_context(STYLE):
        fig, (ax_tok, ax_step) = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
        for run in runs:
            steps = [float(r.get("step", i)) for i, r in enumerate(run.evals)]
            losses = [float(r["eval_loss"]) for r in run.evals]
            c = colors[run.name]
            style = {"color": c, "marker": "o", "markersize": 4, "linewidth": 2, "label": run.name}
            ax_step.plot(steps, losses, **style)
            tokens = [_tokens_at_step(run, s) for s in steps]
            pairs = [(t, v) for t, v in zip(tokens, losses) if t is not None]
            if pairs:
                ax_tok.plot(*zip(*pairs), **style)
        ax_tok.set_xlabel("supervised tokens seen")
        ax_tok.xaxis.set_major_formatter(EngFormatter(sep=""))
        ax_tok.set_ylabel("eval loss (nats / supervised token)")
        ax_tok.set_title("Eval loss vs supervised tokens")
        ax_step.set_xlabel("optimizer step")
        ax_step.set_title("Eval loss vs optimizer step")
        ax_step.legend(loc="upper right")
        return _save(fig, path)


def _bars(
    ax: plt.Axes, runs: Sequence[Run], values: list[float | None], colors: dict[str, str], fmt: str
) -> None:
    names = [r.name for r in runs]
    heights = [v if v is not None else 0.0 for v in values]
    bars = ax.bar(names, heights, color=[colors[n] for n in names], width=0.6)
    labels = ["n/a" if v is None else fmt.format(v) for v in values]
    ax.bar_label(bars, labels=labels, padding=3, fontsize=9)
    ax.margins(y=0.15)
    ax.grid(axis="x", visible=False)
    ax.tick_params(axis="x", rotation=20 if len(names) > 3 else 0)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right" if len(names) > 3 else "center")


def _bar_figure(
    runs: Sequence[Run],
    colors: dict[str, str],
    path: Path,
    panels: list[tuple[str, str, list[float | None], str, bool]],
) -> Path | None:
    """Side-by-side bar panels: (title, y label, values per run, label format, percent axis)."""
    if not any(v is not None for _, _, values, _, _ in panels for v in values):
        return None
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels) + 0.4 * len(runs), 4.6))
        for ax, (title, ylabel, values, fmt, percent) in zip(axes, panels):
            _bars(ax, runs, values, colors, fmt)
            ax.set_title(title)
            ax.set_ylabel(ylabel)
            if percent:
                ax.yaxis.set_major_formatter(PercentFormatter(1.0))
            else:
                ax.yaxis.set_major_formatter(EngFormatter(sep=""))
        return _save(fig, path)


def plot_throughput(runs: Sequence[Run], colors: dict[str, str], path: Path) -> Path | None:
    """Training throughput per run: tokens/s and samples/s."""
    return _bar_figure(
        runs,
        colors,
        path,
        [
            (
                "Throughput (tokens)",
                "tokens / s",
                [r.stat("tokens_per_s") for r in runs],
                "{:,.0f}",
                False,
            ),
            (
                "Throughput (samples)",
                "samples / s",
                [r.stat("samples_per_s") for r in runs],
                "{:,.2f}",
                False,
            ),
        ],
    )


def plot_steps_wall(runs: Sequence[Run], colors: dict[str, str], path: Path) -> Path | None:
    """Optimizer steps and wall-clock time per run (packing trains the same data in fewer steps)."""
    wall_h = [None if r.stat("wall_s") is None else r.stat("wall_s") / 3600 for r in runs]
    wall_unit, wall = "hours", wall_h
    if all(v is None or v < 1 for v in wall_h):
        wall_unit, wall = "minutes", [None if v is None else v * 60 for v in wall_h]
    return _bar_figure(
        runs,
        colors,
        path,
        [
            ("Optimizer steps", "steps", [r.stat("steps") for r in runs], "{:,.0f}", False),
            ("Wall-clock time", wall_unit, wall, "{:,.2f}", False),
        ],
    )


def padding_fraction(run: Run) -> float | None:
    """Share of computed tokens that are padding: 1 - 1/padding_ratio, else pad / (real + pad)."""
    ratio = run.stat("padding_ratio")
    if ratio is not None and ratio >= 1:
        return 1 - 1 / ratio
    pad, real = run.stat("pad_tokens"), run.stat("train_tokens")
    if pad is not None and real is not None and pad + real > 0:
        return pad / (pad + real)
    return None


def plot_padding(runs: Sequence[Run], colors: dict[str, str], path: Path) -> Path | None:
    """Padding fraction and pack efficiency per run (both shares of the computed tokens)."""
    return _bar_figure(
        runs,
        colors,
        path,
        [
            (
                "Padding fraction",
                "padding / computed tokens",
                [padding_fraction(r) for r in runs],
                "{:.1%}",
                True,
            ),
            (
                "Pack efficiency",
                "real tokens / row capacity",
                [r.stat("pack_efficiency") for r in runs],
                "{:.1%}",
                True,
            ),
        ],
    )


def plot_benchmarks(
    tasks: Sequence[str],
    columns: Sequence[tuple[str, Run]],
    colors: dict[str, str],
    path: Path,
) -> Path | None:
    """Grouped bars: one group per benchmark, one bar per run column, score in %."""
    if not tasks or not columns:
        return None
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(
            figsize=(max(7.0, 1.6 * len(tasks) * max(1, len(columns)) / 2 + 3), 4.8)
        )
        width = 0.8 / len(columns)
        for i, (label, run) in enumerate(columns):
            xs = [t + (i - (len(columns) - 1) / 2) * width for t in range(len(tasks))]
            values = [run.benchmarks.get(task, {}).get("value") for task in tasks]
            heights = [
                100 * v if isinstance(v, (int, float)) and math.isfinite(v) else 0 for v in values
            ]
            bars = ax.bar(xs, heights, width=width * 0.95, color=colors[run.name], label=label)
            ax.bar_label(
                bars,
                labels=["n/a" if v is None else f"{100 * v:.1f}" for v in values],
                padding=2,
                fontsize=8,
            )
        ax.set_xticks(range(len(tasks)), list(tasks))
        ax.set_ylabel("score (%)")
        ax.set_title("Benchmarks")
        ax.grid(axis="x", visible=False)
        ax.margins(y=0.15)
        ax.legend(loc="upper right", ncols=min(3, len(columns)))
        return _save(fig, path)
