"""Golden runs: fixed tiny trainings whose per-step numbers are stored under tests/assets/golden/.

    python -m tests.golden record      # rewrite the assets (only when a change of numbers is intended)
    python -m tests.golden check       # rerun every case and compare (what tests/test_golden.py does)

Each case is one `sft/train.py` command on the tiny model and the built-in demo data. A case file
holds, for every optimizer step, the loss, gradient norm, learning rate, token counts and the piece
ids of every micro-batch (train.record_samples), plus the validation losses. A refactor that keeps
behaviour reproduces every file: integers and piece ids exactly, floats (losses, gradient norms,
lr) to a relative 1e-5. Bit for bit held on the machine that recorded them, but not on another
(an AVX2-only AMD EPYC, 2026-12-02): there the padding case's step-6 loss differed by one float32
ulp (4.6e-7), with the same code at the commit of the last green CI; a change of behaviour
(order, normalisation, schedule) moves these numbers by 1e-4 or more from the first step it
touches.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "tests" / "assets" / "golden"
BASE = [
    "model=tiny",
    "data=demo",
    "data.demo_size=48",
    "data.max_length=512",
    "data.overlong=drop",
    "data.val_fraction=0.1",
    "model.dropout=0.1",
    "train.max_steps=6",
    "train.micro_batch_size=4",
    "train.eval_every=3",
    "train.record_samples=true",
    "train.progress=false",
    "train.report_to=none",
    "optim.lr=1e-3",
    "optim.warmup_ratio=0.2",
]
CASES: dict[str, list[str]] = {
    "padding": ["collator=padding"],
    "packing_bfd": ["collator=packing", "collator.strategy=bfd", "collator.pack_length=768"],
    "packing_random_concat": ["collator=packing", "collator.strategy=random_concat"],
    "padding_free": ["collator=padding_free"],
    "norm_sample": ["collator=packing", "train.loss_normalization=sample"],
    "norm_micro_batch_mean": ["collator=padding", "train.loss_normalization=micro_batch_mean"],
    "grad_accum2": ["collator=packing", "train.grad_accum=2", "train.micro_batch_size=2"],
    "resumed": ["collator=packing", "train.save_every=3"],  # run, drop step-6, rerun from step-3
}
STEP_KEYS = (
    "step",
    "loss",
    "grad_norm",
    "lr",
    "samples",
    "tokens",
    "supervised_tokens",
    "pad_tokens",
)


def _train(run_dir: Path, args: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "SFT_TEST"))}
    env.setdefault("SFT_CACHE_TOKENIZED", str(run_dir.parent / "tok-cache"))
    env["HF_HUB_OFFLINE"] = "1"
    cmd = [sys.executable, str(ROOT / "sft" / "train.py"), *BASE, *args, f"run_dir={run_dir}"]
    r = subprocess.run(
        cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600, check=False
    )
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {r.returncode}:\n{r.stderr[-3000:]}")


def run_case(name: str, workdir: Path) -> dict:
    """Run one case in `workdir` and return what its golden file holds."""
    run_dir = workdir / name
    args = CASES[name]
    _train(run_dir, args)
    if name == "resumed":
        shutil.rmtree(run_dir / "checkpoints" / "step-6")
        shutil.rmtree(run_dir / "final")
        (run_dir / "summary.json").unlink()
        _train(run_dir, args)  # resumes from step-3
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    pieces = [
        json.loads(line) for line in (run_dir / "samples" / "rank0.jsonl").read_text().splitlines()
    ]
    steps = [{k: r[k] for k in STEP_KEYS} for r in rows if "loss" in r]
    by_step = {p["step"]: p["pieces"] for p in pieces}
    for s in steps:
        s["pieces"] = by_step[s["step"]]
    evals = [
        {"step": r["step"], "eval_loss": r["eval_loss"], "eval_tokens": r["eval_tokens"]}
        for r in rows
        if "eval_loss" in r
    ]
    return {"args": args, "steps": steps, "evals": evals}


REL_TOL = 1e-5  # floats: relative tolerance (see the module docstring); everything else exact


def differences(want, got, where: str = "") -> list[str]:
    """Where `got` departs from `want`: floats beyond REL_TOL, anything else not equal."""
    if isinstance(want, float) or isinstance(got, float):
        ok = isinstance(want, (int, float)) and isinstance(got, (int, float))
        if ok and math.isclose(want, got, rel_tol=REL_TOL, abs_tol=1e-12):
            return []
        return [f"{where}: {got!r} != {want!r}"]
    if isinstance(want, dict) and isinstance(got, dict):
        if want.keys() != got.keys():
            return [f"{where}: keys {sorted(got)} != {sorted(want)}"]
        return [d for k in want for d in differences(want[k], got[k], f"{where}.{k}")]
    if isinstance(want, list) and isinstance(got, list):
        if len(want) != len(got):
            return [f"{where}: {len(got)} items != {len(want)}"]
        return [
            d for i, (w, g) in enumerate(zip(want, got)) for d in differences(w, g, f"{where}[{i}]")
        ]
    return [] if want == got else [f"{where}: {got!r} != {want!r}"]


def main(argv: list[str]) -> int:
    mode = argv[0] if argv else "check"
    names = argv[1:] or list(CASES)
    ASSETS.mkdir(parents=True, exist_ok=True)
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            got = run_case(name, Path(tmp))
            path = ASSETS / f"{name}.json"
            if mode == "record":
                path.write_text(json.dumps(got, indent=1) + "\n")
                print(f"recorded {path.relative_to(ROOT)} ({len(got['steps'])} steps)")
            else:
                diff = differences(json.loads(path.read_text()), got, name)
                bad += bool(diff)
                print(f"{name}: {'same' if not diff else 'DIFFERENT: ' + '; '.join(diff[:3])}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
