"""Training throughput of padding vs packing, measured through the real trainer (`sft/train.py`).

    python benchmarks/bench_train.py [--datasets demo,lima] [--steps 6] [--warmup 2] \
        [--json benchmarks/results/train_cpu.json] [--markdown FILE]

For every dataset (`data=demo`, and `data=lima` at max_length 2048 when ../shared/data holds it)
it runs `sft/train.py` once per setup, for `--steps` optimizer steps of SmolLM2-135M (fp32):

    padding         collator=padding,      random micro-batches of 8 samples, sdpa + padding mask
    packing_varlen  collator=packing,      1 pack of max_length tokens per micro-batch, varlen
    packing_sdpa    collator=packing,      the same packs through sdpa's block-diagonal mask
    padding_free    collator=padding_free, padding's micro-batches of 8 without the pads, varlen

and reads the per-step lines of the run's metrics.jsonl, skipping the first `--warmup` steps:
real tokens/s = real (non-pad) tokens / step seconds. The ideal speed-up of packing is the
padding run's computed/real tokens over those same steps (what padding wastes); achieved =
real tokens/s of a packing setup / real tokens/s of padding; target achieved/ideal >= 90%.
Collation is timed in this process on the very micro-batches those steps trained on (same plan,
same collator as the trainer builds) and reported as a fraction of the step time (target < 2%).

The machine is shared: before starting, the script waits until the 1-minute load average is
below `--max-load` (polling every 30 s, at most `--wait-max` seconds) and records the load before
every run. On 2 cores SmolLM2 trains ~250 tokens/s, so a full run takes about 15 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
try:
    import sft  # noqa: F401
except ImportError:  # running from a checkout without an install
    sys.path.insert(0, str(ROOT))

SETUPS = {
    "padding": ["collator=padding", "model.attn_implementation=sdpa", "train.micro_batch_size=8"],
    "packing_varlen": ["collator=packing", "model.attn_implementation=varlen", "train.micro_batch_size=1"],
    "packing_sdpa": ["collator=packing", "model.attn_implementation=sdpa", "train.micro_batch_size=1"],
    "padding_free": ["collator=padding_free", "model.attn_implementation=varlen", "train.micro_batch_size=8"],
}
DATASETS = {
    "demo": ["data=demo"],
    "lima": ["data=lima", "data.max_length=2048"],
}
COMMON = ["train.grad_accum=1", "train.progress=false", "train.tensorboard=false", "train.eval_every=0",
          "train.save_every=0", "train.resume_from=none", "optim.warmup_ratio=0.0", "seed=0"]


def load1() -> float:
    return os.getloadavg()[0]


def wait_for_quiet(max_load: float, wait_max: float, poll: float = 30.0) -> dict:
    """Wait until the 1-minute load average is below `max_load`; returns what happened."""
    start = time.time()
    first = load1()
    while load1() >= max_load and time.time() - start < wait_max:
        print(f"[bench] load average {load1():.2f} >= {max_load}: waiting ({time.time() - start:.0f} s so far)",
              flush=True)
        time.sleep(poll)
    return {"load_at_start": first, "waited_s": round(time.time() - start, 1), "load_when_started": load1(),
            "quiet": load1() < max_load}


def run_trainer(overrides: list[str], run_dir: Path, timeout: int) -> list[dict]:
    """One `sft/train.py` run; returns the per-step rows of its metrics.jsonl."""
    cmd = [sys.executable, str(ROOT / "sft" / "train.py"), *overrides, f"run_dir={run_dir}"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{tail}")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "loss" in r]


def measure(rows: list[dict], warmup: int) -> dict:
    """Real and computed tokens/s over the steps after the warm-up."""
    kept = [r for r in rows if r["step"] > warmup]
    if not kept:
        raise RuntimeError(f"no step left after {warmup} warm-up steps")
    seconds = [r["tokens"] / r["tokens_per_s"] for r in kept]
    real = sum(r["tokens"] for r in kept)
    computed = real + sum(r["pad_tokens"] for r in kept)
    return {"steps": [r["step"] for r in kept], "real_tokens": real, "computed_tokens": computed,
            "supervised_tokens": sum(r["supervised_tokens"] for r in kept), "samples": sum(r["samples"] for r in kept),
            "seconds": sum(seconds), "step_s": sum(seconds) / len(kept),
            "real_tokens_per_s": real / sum(seconds), "computed_tokens_per_s": computed / sum(seconds),
            "loss_last": kept[-1]["loss"]}


class CollateTimer:
    """Times the trainer's collator on the micro-batches of given steps (same plan, same inputs)."""

    def __init__(self, overrides: list[str]) -> None:
        from sft.cli_config import compose_job
        from sft.data.dataset import prepare_data
        from sft.models.build import load_tokenizer

        cfg, _ = compose_job([*overrides, "run_dir=/tmp/sft-bench-unused"])
        d = cfg.data
        self.cfg = cfg
        self.tokenizer = load_tokenizer(cfg.model.name_or_path)
        self.data = prepare_data(
            self.tokenizer, path=d.path, split=d.split, fmt=d.format, val_path=d.val_path,
            val_fraction=d.val_fraction, val_max_samples=d.val_max_samples, max_length=d.max_length,
            overlong=d.overlong, train_on=d.train_on, limit=d.limit, num_proc=d.num_proc,
            max_bad_fraction=d.max_bad_fraction, system_prompt=d.system_prompt, demo_size=d.demo_size,
            builder=d.builder, builder_args=dict(d.builder_args), seed=cfg.seed, progress=False)

    def padding_ideal(self, batch_size: int) -> float:
        """Computed/real tokens of random padding micro-batches over a whole epoch."""
        from sft.data.plan import plan_epoch

        plan = plan_epoch(self.data.train, self.data.tokens.mask, kind="padding", micro_batch_size=batch_size,
                          grad_accum=1, world_size=1, seed=self.cfg.seed, epoch=0, capacity=self.cfg.data.max_length)
        real = computed = 0
        for step in plan.steps:
            for mb in step[0]:
                lens = [b - a for row in mb for a, b, _ in row]
                real += sum(lens)
                computed += len(lens) * max(lens)
        return computed / real

    def time_steps(self, setup: list[str], steps: list[int], repeat: int = 3) -> float:
        """Seconds to collate one optimizer step's micro-batches, averaged over `steps` (best of `repeat`)."""
        from sft.cli_config import compose_job
        from sft.data.collators import build_collator
        from sft.data.plan import plan_epoch
        from sft.models.build import resolve_attn_implementation

        cfg, _ = compose_job([*setup, "run_dir=/tmp/sft-bench-unused"])
        c, t = cfg.collator, cfg.train
        capacity = c.pack_length or cfg.data.max_length
        attn = resolve_attn_implementation(cfg.model.attn_implementation, c.name, cuda=False)
        flatten = attn in ("varlen", "flash_attention_2", "flash_attention_3")  # the trainer's rule
        collate = build_collator(c.name, pad_id=self.tokenizer.pad_token_id, pad_to_multiple_of=c.pad_to_multiple_of,
                                 flatten=flatten, isolate=c.isolate)
        plan = plan_epoch(self.data.train, self.data.tokens.mask, kind=c.name, micro_batch_size=t.micro_batch_size,
                          grad_accum=t.grad_accum, world_size=1, seed=cfg.seed, epoch=0, capacity=capacity,
                          strategy=c.strategy)
        ids, labels_of = self.data.tokens.ids, self.data.tokens.labels
        best = float("inf")
        for _ in range(repeat):
            start = time.perf_counter()
            for s in steps:
                for rows in plan.steps[s - 1][0]:
                    collate(rows, ids, labels_of)
            best = min(best, time.perf_counter() - start)
        return best / len(steps)


def bench_dataset(name: str, base: list[str], args, out_root: Path) -> dict:
    data_overrides = [*base, *COMMON, f"model={args.model}", f"train.max_steps={args.steps}", *args.extra]
    timer = CollateTimer(data_overrides)
    result: dict = {"overrides": data_overrides, "train_samples": int(len(timer.data.train)),
                    "padding_ideal_epoch": timer.padding_ideal(8), "setups": {}}
    for setup in args.setups:
        overrides = [*data_overrides, *SETUPS[setup]]
        run_dir = out_root / f"{name}-{setup}"
        load_before = load1()
        t0 = time.time()
        rows = run_trainer(overrides, run_dir, timeout=args.timeout)
        m = measure(rows, args.warmup)
        m["collate_s_per_step"] = timer.time_steps([*data_overrides, *SETUPS[setup]], m["steps"])
        m["collate_fraction"] = m["collate_s_per_step"] / m["step_s"]
        m["load_before"] = round(load_before, 2)
        m["wall_s"] = round(time.time() - t0, 1)
        m["setup"] = SETUPS[setup]
        result["setups"][setup] = m
        print(f"[bench] {name:5s} {setup:15s} real {m['real_tokens_per_s']:7.1f} tok/s, computed "
              f"{m['computed_tokens_per_s']:7.1f} tok/s, collate {m['collate_fraction']:.2%} of a step "
              f"(load before {load_before:.2f}, {m['wall_s']:.0f} s)", flush=True)
        shutil.rmtree(run_dir, ignore_errors=True)  # the exported model is 0.5 GB
    pad = result["setups"].get("padding")
    if pad:
        ideal = pad["computed_tokens"] / pad["real_tokens"]
        result["ideal_ratio"] = ideal
        for setup, m in result["setups"].items():
            if setup != "padding":
                m["achieved_ratio"] = m["real_tokens_per_s"] / pad["real_tokens_per_s"]
                m["achieved_over_ideal"] = m["achieved_ratio"] / ideal
    return result


def markdown(record: dict) -> str:
    lines = ["| data | setup | real tokens/s | computed tokens/s | speed-up (achieved) | ideal | achieved / ideal "
             "| collate / step |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in record["datasets"].items():
        for setup, m in r["setups"].items():
            ach = m.get("achieved_ratio")
            speedup = "1.00" if ach is None else f"{ach:.2f}"
            of_ideal = "" if ach is None else f"{m['achieved_over_ideal']:.0%}"
            lines.append(
                f"| {name} | {setup} | {m['real_tokens_per_s']:.1f} | {m['computed_tokens_per_s']:.1f} | "
                f"{speedup} | {r.get('ideal_ratio', float('nan')):.2f} | {of_ideal} | {m['collate_fraction']:.2%} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default="demo,lima")
    p.add_argument("--setups", default=",".join(SETUPS))
    p.add_argument("--model", default="smollm2_135m", help="a configs/model option (tiny: a quick dry run)")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--max-load", type=float, default=1.0)
    p.add_argument("--wait-max", type=float, default=1200.0)
    p.add_argument("--timeout", type=int, default=1800, help="seconds per training run")
    p.add_argument("--extra", nargs="*", default=[], help="more trainer overrides for every run")
    p.add_argument("--json", default="")
    p.add_argument("--markdown", default="", help="also write the table to this file")
    args = p.parse_args()
    args.setups = [s for s in args.setups.split(",") if s]
    unknown = [s for s in args.setups if s not in SETUPS]
    if unknown or args.warmup >= args.steps:
        p.error(f"unknown setups {unknown}" if unknown else "--warmup must be < --steps")

    from sft.config import shared_data_dir

    import torch

    record: dict = {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                    "platform": platform.platform()},
        "steps": args.steps, "warmup": args.warmup, "model": args.model,
        "load": wait_for_quiet(args.max_load, args.wait_max), "datasets": {},
    }
    if not record["load"]["quiet"]:
        print(f"[bench] WARNING: the machine stayed loaded (load {load1():.2f}); numbers are noisy", flush=True)
    out_root = Path(tempfile.mkdtemp(prefix="sft-bench-train-"))
    try:
        for name in args.datasets.split(","):
            if name == "lima" and not (Path(shared_data_dir()) / "lima" / "lima_messages.jsonl").is_file():
                print(f"[bench] skipping lima: not found under {shared_data_dir()}", flush=True)
                continue
            record["datasets"][name] = bench_dataset(name, DATASETS[name], args, out_root)
    finally:
        shutil.rmtree(out_root, ignore_errors=True)
    record["load_at_end"] = round(load1(), 2)
    table = markdown(record)
    print(table)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")


if __name__ == "__main__":
    main()
