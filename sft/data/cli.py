"""`sft-data`: look at what a data config gives the model, before any training.

    sft-data show  data=lima model=smollm2_135m --index 3     one sample, trained tokens in green
    sft-data packs data=demo --n-packs 6 --out packs.png      padding rows vs packs, as a picture
    sft-data stats data=lima --batch-size 8                   padding waste, pack efficiency, steps
    sft-data stats data=... collator=packing collator.group_by=source    ... and per group mode

Arguments without dashes are the trainer's own overrides (Hydra syntax, same config groups), so
the samples shown are exactly those `sft-train` with the same overrides would train on: same
tokenizer and chat template, same overlong policy, same planner. Errors print one line
(`error: ...`) and exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from sft.errors import UserError, exit_on_user_error


@dataclass
class Loaded:
    cfg: Any  # JobConfig
    tokenizer: Any
    data: Any  # PreparedData

    @property
    def packing(self):
        """The packing this config trains with, or the default packing beside a padding config."""
        from sft.batching import packing_of

        return packing_of(self.cfg.collator, self.cfg.data.max_length)

    @property
    def capacity(self) -> int:
        return self.packing.capacity

    def lengths(self) -> np.ndarray:
        return (self.data.train[:, 2] - self.data.train[:, 1]).astype(np.int64)

    @property
    def groups(self) -> dict:
        """{"groups": ids} for the planner when the config sets collator.group_by, else {}."""
        return {} if self.data.groups is None else {"groups": self.data.groups}


def load(overrides: list[str]) -> Loaded:
    """Compose the trainer's config for `overrides`, load its tokenizer and prepare its data."""
    from sft.cli_config import compose_job
    from sft.data.dataset import prepare_data
    from sft.models.build import load_tokenizer

    overrides = list(overrides)
    if not any(o.startswith("run_dir=") for o in overrides):
        overrides.append("run_dir=/tmp/sft-data")  # required by the schema, never written
    cfg, _ = compose_job(overrides)
    tokenizer = load_tokenizer(cfg.model)
    group_by = getattr(cfg.collator, "group_by", "")
    data = prepare_data(tokenizer, cfg.data, cfg.seed, progress=False, group_by=group_by)
    return Loaded(cfg, tokenizer, data)


# --------------------------------------------------------------------------- show


def show(loaded: Loaded, index: int, split: str = "train") -> None:
    """Print one sample with its trained tokens coloured, and a one-line summary above it."""
    from rich.text import Text

    from sft.data.targets import trained_tokens
    from sft.data.visualize import render_sample

    pieces = loaded.data.train if split == "train" else loaded.data.val
    if not 0 <= index < len(pieces):
        raise UserError(
            f"--index {index} is out of range: this config has {len(pieces)} {split} samples "
            f"(0..{len(pieces) - 1})"
        )
    row, a, b = (int(x) for x in pieces[index])
    ids = loaded.data.tokens.ids[a:b]
    trained = trained_tokens(loaded.data.tokens.targets, a, b)
    console = _console()
    where = loaded.data.tokens.row_ids[row]
    console.print(
        Text(
            f"{split} sample {index} ({where}): {b - a} tokens, {int(trained.sum())} trained "
            f"(green); untrained in grey; shades alternate per token",
            style="bold",
        )
    )
    console.print(render_sample(loaded.tokenizer, ids, trained))


# --------------------------------------------------------------------------- packs


def packs_picture(loaded: Loaded, out: str, n_packs: int, batch_size: int) -> dict:
    """Draw the first `batch_size` padding rows and the first `n_packs` packs of epoch 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sft.data.plan import sample_rows
    from sft.data.visualize import draw_layout, save_figure

    if n_packs < 1:
        raise UserError(f"--n-packs must be >= 1, got {n_packs}")
    cfg, data, cap = loaded.cfg, loaded.data, loaded.capacity
    strategy = loaded.packing.strategy
    rows, _ = loaded.packing.rows(
        data.train, data.tokens.targets, seed=cfg.seed, epoch=0, **loaded.groups
    )
    packs = rows[:n_packs]
    pad_rows = []
    if batch_size > 0:
        pad_rows = sample_rows(data.train, seed=cfg.seed, epoch=0)[:batch_size]
    n_panels = 2 if pad_rows else 1
    heights = [len(pad_rows), len(packs)] if pad_rows else [len(packs)]
    fig, axes = plt.subplots(
        n_panels,
        1,
        figsize=(11, 1.0 + 0.42 * sum(heights) + 0.9 * n_panels),
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    info: dict[str, Any] = {"capacity": cap, "strategy": strategy}
    width = cap
    if pad_rows:
        pad_width = max(b - a for ((a, b, _),) in pad_rows)
        real = sum(b - a for ((a, b, _),) in pad_rows)
        info["padding_rows"] = len(pad_rows)
        info["padding_pad_fraction"] = 1 - real / (pad_width * len(pad_rows))
        draw_layout(
            axes[0][0],
            pad_rows,
            data.tokens.mask,
            pad_width,
            f"padding: a random micro-batch of {len(pad_rows)} samples, right-padded to the longest "
            f"({pad_width} tokens): {info['padding_pad_fraction']:.0%} of the computed positions are pad",
            labels=[f"sample {i}" for i in range(len(pad_rows))],
            xlim=width,
        )
    real = sum(b - a for row in packs for a, b, _ in row)
    n_samples = sum(len(row) for row in packs)
    info["packs"] = len(packs)
    info["pack_samples"] = n_samples
    info["pack_fill"] = real / (cap * len(packs))
    draw_layout(
        axes[-1][0],
        packs,
        data.tokens.mask,
        width,
        f"packing ({strategy}, pack length {cap}): {len(packs)} packs hold {n_samples} samples, "
        f"{info['pack_fill']:.1%} full; each sample sees only itself",
        labels=[f"pack {i}" for i in range(len(packs))],
        color_offset=3,
    )
    fig.text(
        0.01,
        -0.01,
        "one colour per sample; full colour = trained tokens (in the loss), pale = prompt "
        "(not trained), grey hatched = padding (computed, wasted)",
        fontsize=9,
        color="0.3",
    )
    fig.tight_layout()
    info["out"] = str(save_figure(fig, out))
    plt.close(fig)
    return info


# --------------------------------------------------------------------------- stats


def _padding_ratio(loaded: Loaded, batch_size: int, group_by_length: bool) -> float:
    from sft.data.plan import sample_rows

    lengths = loaded.lengths()
    rows = sample_rows(
        loaded.data.train,
        seed=loaded.cfg.seed,
        epoch=0,
        group_by_length=group_by_length,
        micro_batch_size=batch_size,
    )
    order = np.array([row[0][2] for row in rows])
    padded = sum(
        len(order[i : i + batch_size]) * int(lengths[order[i : i + batch_size]].max())
        for i in range(0, len(order), batch_size)
    )
    return padded / int(lengths.sum())


def stats(loaded: Loaded, batch_size: int, world_size: int) -> dict:
    """Padding waste, pack efficiency per strategy and optimizer steps per epoch for this config."""
    from sft.batching import PackingConfig, PaddingConfig
    from sft.data.packing import PackStrategy

    cfg, data, cap = loaded.cfg, loaded.data, loaded.capacity
    targets = data.tokens.targets
    lengths = loaded.lengths()
    out: dict[str, Any] = {
        "samples": len(lengths),
        "tokens": int(lengths.sum()),
        "length": {
            "mean": float(lengths.mean()),
            "p50": float(np.percentile(lengths, 50)),
            "p99": float(np.percentile(lengths, 99)),
            "max": int(lengths.max()),
        },
        "max_length": cfg.data.max_length,
        "capacity": cap,
        "data_report": {k: int(v) for k, v in data.report.counts.items()},
        "padding": {
            "batch_size": batch_size,
            "padded_over_real": _padding_ratio(loaded, batch_size, False),
            "padded_over_real_group_by_length": _padding_ratio(loaded, batch_size, True),
        },
        "packing": {},
    }
    lower = -(-int(lengths.sum()) // cap)
    for strategy in PackStrategy.values():
        packing = PackingConfig(strategy=strategy, pack_length=cap).build(cfg.data.max_length)
        rows, dropped = packing.rows(data.train, targets, seed=cfg.seed, epoch=0)
        tokens = sum(b - a for row in rows for a, b, _ in row)
        out["packing"][strategy] = {
            "packs": len(rows),
            "efficiency": tokens / (len(rows) * cap),
            "samples_per_pack": sum(len(r) for r in rows) / len(rows),
            "lower_bound": lower,
            "dropped_fragments": int(dropped),
            "dropped_tokens": int(lengths.sum()) - tokens,
        }
    t = cfg.train
    common = {"grad_accum": t.grad_accum, "world_size": world_size, "seed": cfg.seed, "epoch": 0}
    padding = PaddingConfig().build(cfg.data.max_length)
    pad_plan = padding.plan(data.train, targets, micro_batch_size=t.micro_batch_size, **common)
    pack_plan = loaded.packing.plan(
        data.train, targets, micro_batch_size=t.micro_batch_size, **common, **loaded.groups
    )
    per_pack = out["packing"][str(loaded.packing.strategy)]["samples_per_pack"]
    equal = max(1, round(t.micro_batch_size / per_pack))
    equal_plan = loaded.packing.plan(
        data.train, targets, micro_batch_size=equal, **common, **loaded.groups
    )
    out["steps_per_epoch"] = {
        "micro_batch_size": t.micro_batch_size,
        "grad_accum": t.grad_accum,
        "world_size": world_size,
        "padding": len(pad_plan),
        "packing": len(pack_plan),
        "samples_per_step_padding": len(lengths) / max(len(pad_plan), 1),
        "samples_per_step_packing": len(lengths) / max(len(pack_plan), 1),
        # packs per micro-batch closest to padding's samples per step (about the same schedule length)
        "packs_per_micro_batch_for_equal_steps": equal,
        "packing_at_that_micro_batch_size": len(equal_plan),
    }
    if data.groups is not None:
        from sft.data.group_report import grouping_stats

        out["grouping"] = grouping_stats(loaded, t.micro_batch_size, common)
    return out


def _console():
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal:  # a pipe or a file: don't squeeze tables into 80 columns
        console = Console(highlight=False, width=120)
    return console


def print_stats(s: dict) -> None:
    from rich.table import Table

    console = _console()
    ln = s["length"]
    console.print(
        f"[bold]{s['samples']:,} training samples, {s['tokens']:,} tokens[/] (length mean "
        f"{ln['mean']:.0f}, median {ln['p50']:.0f}, p99 {ln['p99']:.0f}, max {ln['max']}; "
        f"max_length {s['max_length']}, pack length {s['capacity']})"
    )
    console.print(f"data report: {s['data_report']}")
    p = s["padding"]
    console.print(
        f"padding, random micro-batches of {p['batch_size']}: computed/real tokens = "
        f"[bold]{p['padded_over_real']:.2f}[/] ({p['padded_over_real_group_by_length']:.2f} with "
        f"collator.group_by_length=true): the speed-up packing can give"
    )
    table = Table(title="packing, per strategy")
    for col in (
        "strategy",
        "packs",
        "lower bound",
        "efficiency",
        "samples/pack",
        "dropped fragments",
        "dropped tokens",
    ):
        table.add_column(col, justify="right" if col != "strategy" else "left")
    for name, r in s["packing"].items():
        table.add_row(
            name,
            f"{r['packs']:,}",
            f"{r['lower_bound']:,}",
            f"{r['efficiency']:.2%}",
            f"{r['samples_per_pack']:.1f}",
            str(r["dropped_fragments"]),
            f"{r['dropped_tokens']:,}",
        )
    console.print(table)
    st = s["steps_per_epoch"]
    console.print(
        f"optimizer steps per epoch (micro_batch_size {st['micro_batch_size']}, grad_accum "
        f"{st['grad_accum']}, {st['world_size']} process(es)): padding [bold]{st['padding']}[/] "
        f"({st['samples_per_step_padding']:.1f} samples/step), packing [bold]{st['packing']}[/] "
        f"({st['samples_per_step_packing']:.1f} samples/step); with "
        f"train.micro_batch_size={st['packs_per_micro_batch_for_equal_steps']} packing takes "
        f"{st['packing_at_that_micro_batch_size']} steps, the closest to padding's"
    )
    if "grouping" in s:
        from sft.data.group_report import print_grouping

        console.print(print_grouping(s["grouping"]))


# --------------------------------------------------------------------------- entry point


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sft-data", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("show", help="print one tokenized sample, trained tokens coloured")
    s.add_argument("--index", type=int, default=0, help="which sample (after the overlong policy)")
    s.add_argument("--split", choices=("train", "val"), default="train")
    k = sub.add_parser("packs", help="draw a few packs (and a padding micro-batch) as a PNG")
    k.add_argument("--out", default="packs.png")
    k.add_argument("--n-packs", type=int, default=6)
    k.add_argument(
        "--batch-size", type=int, default=8, help="padding rows drawn above the packs (0: none)"
    )
    t = sub.add_parser("stats", help="padding waste, pack efficiency per strategy, steps per epoch")
    t.add_argument(
        "--batch-size", type=int, default=8, help="random padding micro-batches of this size"
    )
    t.add_argument("--world-size", type=int, default=1)
    t.add_argument("--json", action="store_true", help="print the numbers as JSON")
    for sp in (s, k, t):
        sp.add_argument("overrides", nargs="*", help="trainer overrides, e.g. data=lima model=tiny")
    return p


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        raise UserError(
            f"{bad[0]!r} is not an override; write key=value (e.g. data=lima, data.max_length=1024)"
        )
    if getattr(args, "batch_size", 1) < 0:
        raise UserError(f"--batch-size must be >= 0, got {args.batch_size}")
    loaded = load(args.overrides)
    if args.command == "show":
        show(loaded, args.index, args.split)
    elif args.command == "packs":
        info = packs_picture(loaded, args.out, args.n_packs, args.batch_size)
        print(
            f"wrote {info['out']}: {info['packs']} packs holding {info['pack_samples']} samples "
            f"({info['pack_fill']:.1%} full)"
        )
    else:
        if args.batch_size < 1:
            raise UserError(f"--batch-size must be >= 1 for stats, got {args.batch_size}")
        result = stats(loaded, args.batch_size, args.world_size)
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            print_stats(result)


if __name__ == "__main__":
    main()
