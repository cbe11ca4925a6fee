"""Time the pack planner (`sft.data.packing.pack`) against TRL's `pack_dataset(strategy="bfd")`.

    python benchmarks/bench_planner.py [--n 1200000] [--capacity 4096] [--repeat 3] \
        [--groups 9] [--json benchmarks/results/planner.json]

Lengths: `n` draws of round(lognormal(6.04, 1.0)) clipped to [1, capacity] (mean about 670
tokens at capacity 4096), seeded. Each of our strategies is timed on those lengths (best of
`--repeat`); TRL is timed once, on a `datasets.Dataset` whose `input_ids` column has exactly
those lengths, timing only the `pack_dataset` call. TRL truncates samples longer than
`seq_length`; the lengths are clipped to capacity, so both sides see the same samples, and the
"dropped" column counts what each side lost anyway. TRL packs inside `datasets.map` batches
(1,000 rows unless `--trl-map-batch-size` says otherwise); our planner sees the whole dataset.

Grouped packing (`collator.group_by`, sft/data/grouping.py): bfd under group_mode=together and
apart, with `--groups` seeded group ids of skewed sizes (group k drawn in proportion to
1/(k+1), like FLAN-CoT's sources), timed interleaved with plain bfd (best of `--repeat` each);
"vs bfd" is its time over plain bfd's (the target: within 2x), "mixed" the share of packs of
several samples that hold more than one group.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

try:
    import sft  # noqa: F401
except ImportError:  # running from a checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sft.data.grouping import GroupMode, group_stats, pack_grouped
from sft.data.packing import STRATEGIES, pack, pack_stats


def make_lengths(n: int, capacity: int, seed: int) -> np.ndarray:
    """Seeded lognormal sample lengths (mean about 670 tokens before clipping to capacity)."""
    raw = np.random.default_rng(seed).lognormal(6.04, 1.0, n)
    return np.clip(np.rint(raw), 1, capacity).astype(np.int64)


def time_ours(lengths: np.ndarray, capacity: int, strategy: str, repeat: int) -> dict:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        packs = pack(lengths, capacity, strategy)
        best = min(best, time.perf_counter() - start)
    placed = np.concatenate(packs)
    assert np.array_equal(np.sort(placed), np.arange(len(lengths))), "a sample was lost"
    assert max(int(lengths[p].sum()) for p in packs) <= capacity, "a pack overflows"
    stats = pack_stats(lengths, packs, capacity)
    return {
        "planner": f"sft {strategy}",
        "seconds": best,
        "packs": stats.n_packs,
        "efficiency": stats.efficiency,
        "lower_bound": stats.lower_bound,
        "tokens_dropped": int(lengths.sum()) - stats.total_tokens,
    }


def make_groups(n: int, n_groups: int, seed: int) -> np.ndarray:
    """Seeded group ids, group k drawn in proportion to 1 / (k + 1)."""
    p = 1.0 / np.arange(1, n_groups + 1)
    return np.random.default_rng(seed + 1).choice(n_groups, n, p=p / p.sum())


def time_grouped(lengths: np.ndarray, groups: np.ndarray, capacity: int, repeat: int) -> list:
    """bfd together / apart against plain bfd, timed in turn so load changes hit all three."""
    best = {"plain": float("inf"), **{m: float("inf") for m in GroupMode.values()}}
    packs = {}
    for _ in range(repeat):
        start = time.perf_counter()
        packs["plain"] = pack(lengths, capacity, "bfd")
        best["plain"] = min(best["plain"], time.perf_counter() - start)
        for mode in GroupMode.values():
            start = time.perf_counter()
            packs[mode] = pack_grouped(lengths, groups, capacity, "bfd", mode)
            best[mode] = min(best[mode], time.perf_counter() - start)
    rows = []
    for name in ("plain", *GroupMode.values()):
        placed = np.concatenate(packs[name])
        assert np.array_equal(np.sort(placed), np.arange(len(lengths))), "a sample was lost"
        assert max(int(lengths[p].sum()) for p in packs[name]) <= capacity, "a pack overflows"
        stats = pack_stats(lengths, packs[name], capacity)
        mixing = group_stats(packs[name], groups)
        rows.append(
            {
                "planner": "sft bfd" + ("" if name == "plain" else f", group_mode={name}"),
                "seconds": best[name],
                "vs_bfd": best[name] / best["plain"],
                "packs": stats.n_packs,
                "efficiency": stats.efficiency,
                "lower_bound": stats.lower_bound,
                "tokens_dropped": int(lengths.sum()) - stats.total_tokens,
                "mixed_fraction": mixing.mixed_fraction,
                "groups_per_pack": mixing.groups_per_pack,
            }
        )
    return rows


def print_grouped(rows: list[dict], n_groups: int) -> None:
    print(f"\ngrouped packing, {n_groups} groups (sizes ~ 1/(k+1)):")
    print(
        f"{'planner':<30} {'seconds':>8} {'vs bfd':>7} {'packs':>9} {'efficiency':>10} {'mixed':>7}"
    )
    for r in rows:
        print(
            f"{r['planner']:<30} {r['seconds']:>8.3f} {r['vs_bfd']:>6.2f}x {r['packs']:>9,} "
            f"{r['efficiency']:>10.5f} {r['mixed_fraction']:>7.2%}"
        )


def time_trl(lengths: np.ndarray, capacity: int, map_batch_size: int | None) -> dict:
    import datasets
    import pyarrow as pa
    import pyarrow.compute as pc
    import trl
    from datasets.table import InMemoryTable
    from trl.data_utils import pack_dataset

    datasets.disable_progress_bars()
    total = int(lengths.sum())
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    values = pa.array(np.zeros(total, dtype=np.int32))  # token ids: their values do not matter
    if total < 2**31:
        ids = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values)
    else:
        ids = pa.LargeListArray.from_arrays(pa.array(offsets), values)
    dataset = datasets.Dataset(InMemoryTable(pa.table({"input_ids": ids})))
    map_kwargs = None if map_batch_size is None else {"batch_size": map_batch_size}

    start = time.perf_counter()
    packed = pack_dataset(dataset, seq_length=capacity, strategy="bfd", map_kwargs=map_kwargs)
    seconds = time.perf_counter() - start

    kept = int(pc.sum(pc.list_value_length(packed.data.column("input_ids"))).as_py())
    n_packs = len(packed)
    return {
        "planner": f"trl {trl.__version__} pack_dataset bfd",
        "seconds": seconds,
        "packs": n_packs,
        "efficiency": kept / (n_packs * capacity),
        "lower_bound": -(-total // capacity),
        "tokens_dropped": total - kept,
        "map_batch_size": 1000 if map_batch_size is None else map_batch_size,
    }


def print_table(rows: list[dict]) -> None:
    header = ("planner", "seconds", "packs", "efficiency", "lower bound", "dropped", "vs TRL")
    lines = [header]
    for r in rows:
        ratio = r.get("speedup_vs_trl")
        lines.append(
            (
                r["planner"],
                f"{r['seconds']:.3f}",
                f"{r['packs']:,}",
                f"{r['efficiency']:.5f}",
                f"{r['lower_bound']:,}",
                f"{r['tokens_dropped']:,}",
                "-" if ratio is None else f"{ratio:.1f}x",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for k, line in enumerate(lines):
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))]
        print("  ".join(cells))
        if k == 0:
            print("  ".join("-" * w for w in widths))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_200_000, help="number of samples")
    parser.add_argument("--capacity", type=int, default=4096, help="tokens per pack")
    parser.add_argument("--repeat", type=int, default=3, help="timings per strategy (best kept)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the lengths")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--skip-trl", action="store_true", help="time our planner only")
    parser.add_argument(
        "--groups", type=int, default=9, help="group ids for the grouped modes (0: skip them)"
    )
    parser.add_argument(
        "--trl-map-batch-size",
        type=int,
        default=None,
        help="batch_size of TRL's datasets.map (default: TRL's, 1000 rows)",
    )
    args = parser.parse_args()

    lengths = make_lengths(args.n, args.capacity, args.seed)
    print(
        f"{args.n:,} samples, mean length {lengths.mean():.1f}, max {lengths.max()}, "
        f"{int(lengths.sum()):,} tokens, capacity {args.capacity}, "
        f"lower bound {-(-int(lengths.sum()) // args.capacity):,} packs, "
        f"{os.cpu_count()} CPUs\n"
    )
    rows = [time_ours(lengths, args.capacity, s, args.repeat) for s in STRATEGIES]
    if not args.skip_trl:
        trl_row = time_trl(lengths, args.capacity, args.trl_map_batch_size)
        for r in rows:
            r["speedup_vs_trl"] = trl_row["seconds"] / r["seconds"]
        rows.append(trl_row)
    print_table(rows)
    grouped = []
    if args.groups > 0:
        groups = make_groups(args.n, args.groups, args.seed)
        grouped = time_grouped(lengths, groups, args.capacity, args.repeat)
        print_grouped(grouped, args.groups)

    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        result = {
            "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
            "n": args.n,
            "capacity": args.capacity,
            "repeat": args.repeat,
            "seed": args.seed,
            "mean_length": float(lengths.mean()),
            "total_tokens": int(lengths.sum()),
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "numpy": np.__version__,
                "platform": platform.platform(),
            },
            "rows": rows,
            "groups": args.groups,
            "grouped": grouped,
        }
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
