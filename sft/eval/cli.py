"""`sft-eval`: benchmark a run dir, a checkpoint or a model with lm-evaluation-harness.

    sft-eval runs/lima-packing --tasks gsm8k,mmlu --limit 50
    sft-eval runs/lima-packing/checkpoints/step-200 --tasks gsm8k --limit 50
    sft-eval path/to/hf-model --tasks humaneval --allow-code-execution --out results/

Invariant: all option parsing lives here; the work is `sft.eval.runner.evaluate`.
"""

from __future__ import annotations

import argparse
import sys

from sft.errors import UserError, exit_on_user_error
from sft.eval.registry import BENCHMARKS


def _limit(text: str) -> int | float:
    try:
        value = float(text) if "." in text else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--limit must be a number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("--limit must be positive")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sft-eval",
        description="Run benchmarks (lm-evaluation-harness) on a run dir, checkpoint or model.",
    )
    p.add_argument("target", help="RUN_DIR, RUN_DIR/checkpoints/step-N, or an HF model dir")
    p.add_argument(
        "--tasks",
        required=True,
        help=f"comma-separated: {', '.join(BENCHMARKS)}, or mmlu_<subject> / bbh_<task>",
    )
    p.add_argument("--limit", type=_limit, default=None, help="documents per (sub-)task")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--num-fewshot", type=int, default=None, help="override every task's shots")
    p.add_argument("--out", default=None, help="results folder (default: RUN_DIR/eval)")
    p.add_argument("--allow-code-execution", action="store_true", help="needed for humaneval")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16")
    tmpl = p.add_mutually_exclusive_group()
    tmpl.add_argument(
        "--no-chat-template",
        dest="chat_template",
        action="store_false",
        default=None,
        help="plain prompts even when the tokenizer has a chat template",
    )
    tmpl.add_argument("--chat-template", dest="chat_template", action="store_true")
    p.add_argument("--data", default=None, help="benchmark data folder (default: $SFT_EVAL_DATA)")
    p.add_argument("--hub", action="store_true", help="lm_eval's stock tasks (needs internet)")
    p.add_argument("--log-samples", action="store_true", help="keep per-sample records")
    p.add_argument("--max-gen-toks", type=int, default=None, help="cap generated tokens")
    p.add_argument("--seed", type=int, default=1234)
    return p


def _print_table(entries: dict[str, dict], out: str) -> None:
    print(f"\n{'task':<24} {'metric':<34} {'value':>8} {'stderr':>8} {'n':>6} {'shots':>5}")
    for e in entries.values():
        value = "n/a" if e["value"] is None else f"{e['value']:.4f}"
        stderr = "" if e["stderr"] is None else f"{e['stderr']:.4f}"
        print(
            f"{e['task']:<24} {e['metric']:<34} {value:>8} {stderr:>8} {e['n']:>6} "
            f"{e['num_fewshot']!s:>5}"
        )
    print(f"results: {out}")


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from sft.eval.paths import locate
    from sft.eval.runner import evaluate

    out = args.out if args.out is not None else locate(args.target).out_dir
    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    entries = evaluate(
        args.target,
        args.tasks,
        args.limit,
        out_dir=args.out,
        batch_size=args.batch_size,
        num_fewshot=args.num_fewshot,
        device=args.device,
        dtype=args.dtype,
        chat_template=args.chat_template,
        allow_code_execution=args.allow_code_execution,
        data=args.data,
        hub=args.hub,
        log_samples=args.log_samples,
        max_gen_toks=args.max_gen_toks,
        seed=args.seed,
    )
    _print_table(entries, str(out))


if __name__ == "__main__":
    sys.exit(main())
