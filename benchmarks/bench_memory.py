"""sft-plan's memory model against measured training runs on CPU: predicted vs peak RSS growth.

    python benchmarks/bench_memory.py [--suite tiny128k,smollm2] [--json benchmarks/results/memory_cpu.json]
    python benchmarks/bench_memory.py --repredict     # today's model against the recorded runs

Every row is a real training run through the trainer (`Recipe`, what sft/train.py runs), alone in
its own process, for `--steps` optimizer steps, of which those from `--from-step` on are measured:
the model is of a step in steady state, with AdamW's states allocated, which they are only after
the first optimizer step (a first step that happens to hold the largest micro-batch peaks without
them; padding's random micro-batches do that). Measured = the process's peak RSS over the
measured steps (Linux's high-water mark, reset through /proc/self/clear_refs when the first
measured step begins; read before final/ is exported) minus its RSS just before the Recipe is
built (torch, transformers and the project imported): the weights, gradients, AdamW states,
activations and loss of the run, plus what the data and the runtime add. Predicted =
`sft.plan_memory.peak_memory` (the total sft-plan prints) for the largest micro-batch of the
measured steps: its rows x longest row, its supervised fraction, the run's
gradient checkpointing and loss implementation, plus the process's own runtime cost, measured
first in the same benchmark by a run whose model is negligible (1 layer, hidden 64). Suites:

    tiny128k  model=tiny, 4 layers, hidden 256, a 128,256-row embedding and head (Llama-3's
              vocabulary), demo data at max_length 1024: padding/packing x micro-batch 2/8 x
              gradient checkpointing off/on x loss full/chunked
    smollm2   SmolLM2-135M-Instruct (fetched offline as `make demo` does), demo data at
              max_length 1024, packing, micro-batch 2: gradient checkpointing off/on x loss
              full/chunked

Live bytes, not the C allocator's retention: each child runs with glibc's mmap threshold fixed
at 128 KiB (`MALLOC_MMAP_THRESHOLD_`, `--allocator live`, the default), so every tensor above it
is its own mapping and its pages leave RSS when it is freed; the peak then counts the tensors
alive at once, the quantity `torch.cuda.max_memory_allocated` reports on a GPU and the model
predicts. glibc's default raises that threshold to 32 MiB after the first large free and keeps
smaller freed blocks in its heap, which adds up to ~1.3 GiB of RSS that no tensor holds
(SmolLM2, checkpointed, chunked loss: 3,965 vs 2,645 MiB); `--allocator default` measures that.

The record holds every row with its ratio measured/predicted; the bar is within +-15%.
`--repredict` trains nothing: it recomputes every recorded row's prediction with the current
`peak_memory` (same largest micro-batch, same runtime baseline) and rewrites the ratios, so a
change of the model is checked against the measurements it must explain in seconds.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITES = {
    "tiny128k": {
        "base": [
            "model=tiny", "model.tiny_layers=4", "model.tiny_hidden_size=256",
            "model.tiny_vocab_size=128256", "data=demo", "data.demo_size=400",
            "data.max_length=1024",
        ],
        "grid": {"collator": ["padding", "packing"], "train.micro_batch_size": [2, 8],
                 "model.gradient_checkpointing": [False, True], "loss.impl": ["full", "chunked"]},
    },
    "smollm2": {
        "base": ["model=smollm2_135m", "data=demo", "data.demo_size=200", "data.max_length=1024",
                 "collator=packing", "train.micro_batch_size=2"],
        "grid": {"model.gradient_checkpointing": [False, True], "loss.impl": ["full", "chunked"]},
    },
}  # fmt: skip
# the process's own cost (torch/DeepSpeed runtime, tokenizer, data): a run whose model is ~nothing
RUNTIME = ["model=tiny", "model.tiny_layers=1", "model.tiny_hidden_size=64", "data=demo",
           "data.demo_size=400", "data.max_length=1024", "collator=padding",
           "train.micro_batch_size=1"]  # fmt: skip
TOLERANCE = 0.15
LIVE_ALLOCATOR = {"MALLOC_MMAP_THRESHOLD_": "131072"}  # glibc: fixed threshold, freed pages return


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    """The process's RSS high-water mark since it started or since `_reset_peak`."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status (this benchmark needs Linux)")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # Linux: reset the peak RSS to the current RSS


def measure(overrides: list[str], steps: int, from_step: int = 2) -> dict:
    """Train `steps` steps of the config in this process; predicted and measured peak bytes of
    steps `from_step`..`steps`."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    from sft.cli_config import compose_job
    from sft.data.targets import count_targets
    from sft.plan_cli import setup_from_config
    from sft.plan_memory import peak_memory, resolve_shape
    from sft.trainer import Recipe

    with tempfile.TemporaryDirectory() as tmp:
        args = [*overrides, f"train.max_steps={steps}", "train.progress=false", f"run_dir={tmp}"]
        cfg, yaml = compose_job(args)
        before = _rss_bytes()
        recipe = Recipe(cfg, yaml)
        try:
            m = cfg.model
            shape = resolve_shape(
                m.name_or_path, m.tiny_hidden_size, m.tiny_layers, m.tiny_vocab_size
            )
            setup = setup_from_config("single", 0, m.dtype, 1, None)
            targets = recipe.data.tokens.targets
            predicted, largest = 0.0, None
            for step in recipe.epochs.plan(0).steps[from_step - 1 : steps]:
                for mb in step[0]:
                    lens = [sum(b - a for a, b, _ in row) for row in mb]
                    sup = sum(count_targets(targets, a, b) for row in mb for a, b, _ in row)
                    rows, length = len(mb), max(lens)
                    p = peak_memory(
                        shape,
                        setup,
                        rows=rows,
                        row_length=length,
                        checkpointing=m.gradient_checkpointing,
                        supervised_fraction=sup / (rows * length),
                        loss_impl=recipe.loss_impl,
                        chunk_tokens=cfg.loss.chunk_tokens,
                        grad_accum=cfg.train.grad_accum,
                    )
                    if p > predicted:
                        predicted, largest = p, {"rows": rows, "row_length": length, "targets": sup}
            finish, seen = recipe.finish, {}

            def before_finish() -> None:  # the measured steps' peak, before final/ is exported
                seen["peak"] = _peak_rss_bytes()
                finish()

            recipe.finish = before_finish
            done = [0]

            def after_step(optimizer, args, kwargs) -> None:
                done[0] += 1
                if done[0] == from_step - 1:
                    _reset_peak()

            handle = register_optimizer_step_post_hook(after_step)
            if from_step == 1:
                _reset_peak()
            t0 = time.perf_counter()
            assert recipe.train() == 0
            handle.remove()
            seconds = time.perf_counter() - t0
        finally:
            recipe.close()
    peak = seen["peak"]
    if done[0] != steps:
        raise RuntimeError(f"{done[0]} optimizer steps counted, {steps} trained")
    return {
        "overrides": overrides,
        "loss_impl": recipe.loss_impl,
        "largest_micro_batch": largest,
        "predicted_bytes": predicted,
        "measured_bytes": peak - before,
        "ratio": (peak - before) / predicted,
        "train_s": round(seconds, 1),
    }


def repredict(path: Path) -> dict:
    """The record at `path` with predictions and ratios recomputed by today's `peak_memory`."""
    from sft.config import LossConfig
    from sft.plan_memory import MemorySetup, peak_memory, resolve_shape

    record = json.loads(path.read_text())
    for row in record["rows"]:
        o = dict(x.split("=", 1) for x in row["overrides"])
        if o["model"] == "tiny":
            shape = resolve_shape(
                "tiny",
                int(o["model.tiny_hidden_size"]),
                int(o["model.tiny_layers"]),
                int(o["model.tiny_vocab_size"]),
            )
        else:
            shape = resolve_shape("HuggingFaceTB/SmolLM2-135M-Instruct")
        mb = row["largest_micro_batch"]
        row["model_bytes"] = peak_memory(
            shape,
            MemorySetup(gpus=1, zero_stage=0, engine="plain", dtype="fp32"),
            rows=mb["rows"],
            row_length=mb["row_length"],
            checkpointing=o["model.gradient_checkpointing"] == "true",
            supervised_fraction=mb["targets"] / (mb["rows"] * mb["row_length"]),
            loss_impl=row["loss_impl"],
            chunk_tokens=LossConfig().chunk_tokens,
        )
        row["predicted_bytes"] = row["model_bytes"] + record["runtime_bytes"]
        row["ratio"] = row["measured_bytes"] / row["predicted_bytes"]
    record["worst_deviation"] = max(abs(r["ratio"] - 1) for r in record["rows"])
    return record


def configs(suite: str) -> list[list[str]]:
    s = SUITES[suite]
    keys = list(s["grid"])
    out = []
    for values in itertools.product(*(s["grid"][k] for k in keys)):
        out.append([*s["base"], *(f"{k}={str(v).lower()}" for k, v in zip(keys, values))])
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", default="tiny128k,smollm2")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--from-step", type=int, default=2, help="first measured step")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "memory_cpu.json"))
    p.add_argument(
        "--allocator",
        choices=["live", "default"],
        default="live",
        help="live: glibc's mmap threshold fixed at 128 KiB so RSS tracks live tensors (default)",
    )
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--repredict", action="store_true", help="recompute the record's predictions")
    a = p.parse_args()
    if a.repredict:
        record = repredict(Path(a.json))
        for r in record["rows"]:
            short = " ".join(r["overrides"][len(SUITES[r["suite"]]["base"]) :])
            print(f"{r['suite']:8s} {short:90s} ratio {r['ratio']:.2f}")
        print(f"worst deviation {record['worst_deviation']:.1%} (bar {TOLERANCE:.0%})")
        Path(a.json).write_text(json.dumps(record, indent=2) + "\n")
        return 0 if record["worst_deviation"] <= TOLERANCE else 1
    if a.child:
        print(json.dumps(measure(json.loads(a.child), a.steps, a.from_step)))
        return 0
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if a.allocator == "live":
        env |= LIVE_ALLOCATOR
    rows, t_start = [], time.time()

    def run(overrides: list[str]) -> dict:
        cmd = [sys.executable, __file__, "--steps", str(a.steps), "--from-step", str(a.from_step)]
        cmd += ["--child", json.dumps(overrides)]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if out.returncode != 0:
            sys.exit(f"{' '.join(overrides)} failed:\n{out.stderr[-2000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    base = run(RUNTIME)
    runtime = base["measured_bytes"] - base["predicted_bytes"]
    print(f"runtime baseline {runtime / 2**20:.0f} MiB (added to every prediction)", flush=True)
    for suite in a.suite.split(","):
        for overrides in configs(suite):
            row = run(overrides) | {"suite": suite}
            row["model_bytes"] = row["predicted_bytes"]
            row["predicted_bytes"] += runtime
            row["ratio"] = row["measured_bytes"] / row["predicted_bytes"]
            rows.append(row)
            short = " ".join(o for o in overrides if o not in SUITES[suite]["base"])
            print(
                f"{suite:8s} {short:90s} predicted {row['predicted_bytes'] / 2**20:7.0f} MiB, "
                f"measured {row['measured_bytes'] / 2**20:7.0f} MiB, ratio {row['ratio']:.2f}",
                flush=True,
            )
    worst = max(abs(r["ratio"] - 1) for r in rows)
    print(f"worst deviation {worst:.1%} (bar {TOLERANCE:.0%})")
    record = {
        "command": "python " + " ".join(["benchmarks/bench_memory.py", *sys.argv[1:]]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "wall_s": round(time.time() - t_start, 1),
        "steps": a.steps,
        "measured_from_step": a.from_step,
        "allocator": a.allocator,
        "runtime_bytes": runtime,
        "worst_deviation": worst,
        "rows": rows,
    }
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {a.json}")
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
