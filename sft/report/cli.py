"""`sft-report`: compare training runs in one markdown report with figures.

    sft-report runs/padding runs/random runs/greedy --out reports/lima
    sft-report outputs/paper/sweep-1/* --by collator.strategy --out reports/seeds   # mean, std

Invariant: option parsing only; the work is `sft.report.build.build_report`.
"""

from __future__ import annotations

import argparse
import sys

from sft.errors import exit_on_user_error


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sft-report",
        description="Write DIR/report.md and PNG figures comparing training runs.",
    )
    p.add_argument("runs", nargs="+", help="run directories (each with metrics.jsonl)")
    p.add_argument("--out", required=True, help="output folder for report.md and the figures")
    p.add_argument(
        "--smooth",
        type=float,
        default=0.8,
        help="EMA weight for the training-loss curves, 0 = raw only (default 0.8)",
    )
    p.add_argument(
        "--by",
        default="",
        help="config keys grouping the runs, e.g. collator.strategy,seed: a table of each "
        "metric's mean and spread per group (groups.csv/json/png)",
    )
    return p


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from sft.report.build import build_report

    by = [k.strip() for k in args.by.split(",") if k.strip()]
    report = build_report(args.runs, args.out, smooth=args.smooth, by=by)
    print(f"report: {report}")


if __name__ == "__main__":
    sys.exit(main())
