"""Training throughput of padding vs packing, measured through the real trainer.

    python benchmarks/bench_train.py [--datasets demo,lima] [--steps 6] [--warmup 2] \
        [--json benchmarks/results/train_cpu.json]

For every dataset (`data=demo`, and `data=lima` at max_length 2048 when ../shared/data holds it)
it trains SmolLM2-135M (fp32, gradient checkpointing) for `--steps` optimizer steps once per
setup, each run in its own process, with the trainer's own `Recipe` (what `sft/train.py` runs):

    padding         collator=padding,      random micro-batches of 8 samples, sdpa + padding mask
    packing_varlen  collator=packing,      1 pack of max_length tokens per micro-batch, varlen
    packing_sdpa    collator=packing,      the same packs through sdpa's block-diagonal mask
    padding_free    collator=padding_free, padding's micro-batches of 8 without the pads, varlen

The per-step numbers come from the run's metrics.jsonl (tokens, pad tokens, step seconds as the
trainer measures them), skipping the first `--warmup` steps. Two things the trainer does not log
are measured around it, without changing it: the seconds spent in its collator (its `collate`
callable is wrapped) and the process CPU seconds of every step (between the first collate calls
of consecutive steps; the last step ends where `export_final` starts).

    real tokens/s       non-pad tokens / wall seconds of the measured steps (what a user sees)
    ideal               computed / real tokens of the padding run's measured steps
    achieved            real tokens/s of a setup / real tokens/s of padding; target >= 90% of ideal
    collate / step      collator seconds / step seconds; target < 2%
    MFU                 model FLOPs of the real tokens / seconds / the best fp32 matmul rate,
                        measured before and after the runs (benchmarks/train_mfu.py)

The machine is shared. The script first waits until the 1-minute load average is below
`--max-load` (polling every 30 s, at most `--wait-max` s) and records the load before every run.
Other processes slow the wall clock of some runs more than others, so the record also gives
every throughput per CPU second of this process x the number of cores ("cpu-normalised"): what
the run would reach alone on the machine, and far less sensitive to the others' load.
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

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `benchmarks.*` (and sft in a checkout) from the root
    sys.path.insert(0, str(ROOT))

from benchmarks.mfu import gemm_peak_flops
from benchmarks.train_mfu import add_mfu, check_same_machine, cpu_model

SETUPS = {
    "padding": ["collator=padding", "model.attn_implementation=sdpa", "train.micro_batch_size=8"],
    "packing_varlen": [
        "collator=packing",
        "model.attn_implementation=varlen",
        "train.micro_batch_size=1",
    ],
    "packing_sdpa": [
        "collator=packing",
        "model.attn_implementation=sdpa",
        "train.micro_batch_size=1",
    ],
    "padding_free": [
        "collator=padding_free",
        "model.attn_implementation=varlen",
        "train.micro_batch_size=8",
    ],
}
DATASETS = {
    "demo": ["data=demo"],
    "lima": ["data=lima", "data.max_length=2048"],
}
# Gradient checkpointing in every setup: padding 8 x 2048 tokens would otherwise hold ~20 GB of
# activations; it costs every setup the same extra forward pass.
COMMON = [
    "train.grad_accum=1",
    "train.progress=false",
    "train.report_to=none",
    "train.eval_every=0",
    "train.save_every=0",
    "train.resume_from=none",
    "optim.warmup_ratio=0.0",
    "seed=0",
    "model.gradient_checkpointing=true",
]


def load1() -> float:
    return os.getloadavg()[0]


def free_gb() -> float:
    """MemAvailable from /proc/meminfo, in GiB (inf where there is no such file)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("inf")


def wait_for_quiet(
    max_load: float, wait_max: float, min_free_gb: float = 6.0, poll: float = 30.0
) -> dict:
    """Wait until the 1-minute load average is below `max_load` and enough memory is free."""
    start = time.time()
    first = load1()
    while (load1() >= max_load or free_gb() < min_free_gb) and time.time() - start < wait_max:
        print(
            f"[bench] load average {load1():.2f} (want < {max_load}), {free_gb():.1f} GB free (want >= "
            f"{min_free_gb}): waiting ({time.time() - start:.0f} s so far)",
            flush=True,
        )
        time.sleep(poll)
    return {
        "load_at_start": round(first, 2),
        "waited_s": round(time.time() - start, 1),
        "load_when_started": round(load1(), 2),
        "free_gb_when_started": round(free_gb(), 1),
        "quiet": load1() < max_load,
    }


# --------------------------------------------------------------------------- one run (child process)


def child(overrides: list[str], out: Path) -> None:
    """Train with the trainer's Recipe; write per-step wall/CPU/collate seconds + metrics rows."""
    from sft.cli_config import compose_job
    from sft.engine import close_distributed
    from sft.trainer import Recipe

    cfg, yaml = compose_job(overrides)
    marks: dict[int, float] = {}  # step (1-based) -> process CPU time when its first collate began
    collate_s: dict[int, float] = {}
    recipe = None
    try:
        recipe = Recipe(cfg, yaml)
        collate = recipe.collate
        export = recipe.export_hf

        def timed_collate(*args, **kwargs):
            step = recipe.step + 1
            marks.setdefault(step, time.process_time())
            t0 = time.perf_counter()
            result = collate(*args, **kwargs)
            collate_s[step] = collate_s.get(step, 0.0) + time.perf_counter() - t0
            return result

        def timed_export(*args, **kwargs):
            marks.setdefault(recipe.step + 1, time.process_time())
            return export(*args, **kwargs)

        recipe.collate = timed_collate
        recipe.export_hf = timed_export
        code = recipe.train()
    finally:
        close_distributed(recipe.engine if recipe is not None else None)
    if code != 0:
        raise SystemExit(f"training exited {code}")
    rows = [
        json.loads(line) for line in (Path(cfg.run_dir) / "metrics.jsonl").read_text().splitlines()
    ]
    steps = []
    for r in rows:
        if "loss" not in r:
            continue
        s = r["step"]
        steps.append(
            {
                **r,
                "wall_s": r["tokens"] / r["tokens_per_s"],
                "collate_s": collate_s[s],
                "cpu_s": marks[s + 1] - marks[s],
            }
        )
    import resource

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.write_text(
        json.dumps(
            {
                "steps": steps,
                "attn": recipe.attn,
                "torch_threads": _threads(),
                "peak_rss_mb": peak_mb,
            }
        )
    )


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def run_child(overrides: list[str], run_dir: Path, timeout: int) -> dict:
    out = run_dir.with_suffix(".json")
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        str(out),
        "--",
        *overrides,
        f"run_dir={run_dir}",
    ]
    env = dict(
        os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false"
    )
    proc = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{tail}")
    return json.loads(out.read_text())


# --------------------------------------------------------------------------- measuring


def measure(steps: list[dict], warmup: int, cores: int) -> dict:
    """Throughput over the steps after the warm-up, by wall clock and per CPU second."""
    kept = [r for r in steps if r["step"] > warmup]
    if not kept:
        raise RuntimeError(f"no step left after {warmup} warm-up steps")
    wall = sum(r["wall_s"] for r in kept)
    cpu = sum(r["cpu_s"] for r in kept)
    real = sum(r["tokens"] for r in kept)
    computed = real + sum(r["pad_tokens"] for r in kept)
    return {
        "steps": [r["step"] for r in kept],
        "samples": sum(r["samples"] for r in kept),
        "real_tokens": real,
        "computed_tokens": computed,
        "supervised_tokens": sum(r["supervised_tokens"] for r in kept),
        "wall_s": wall,
        "cpu_s": cpu,
        "step_s": wall / len(kept),
        "real_tokens_per_s": real / wall,
        "computed_tokens_per_s": computed / wall,
        "real_tokens_per_s_cpu_normalised": real / cpu * cores,
        "computed_tokens_per_s_cpu_normalised": computed / cpu * cores,
        "cpu_utilisation": cpu / wall / cores,
        "collate_s_per_step": sum(r["collate_s"] for r in kept) / len(kept),
        "collate_fraction": sum(r["collate_s"] for r in kept) / wall,
        "loss_last": kept[-1]["loss"],
    }


def padding_ideal_epoch(overrides: list[str], batch_size: int) -> tuple[float, int]:
    """Computed/real tokens of random padding micro-batches over a whole epoch, and the sample count."""
    from sft.batching import PaddingConfig
    from sft.data.cli import load

    loaded = load(overrides)
    data, cfg = loaded.data, loaded.cfg
    plan = (
        PaddingConfig()
        .build(cfg.data.max_length)
        .plan(
            data.train,
            data.tokens.targets,
            micro_batch_size=batch_size,
            grad_accum=1,
            world_size=1,
            seed=cfg.seed,
            epoch=0,
        )
    )
    real = computed = 0
    for step in plan.steps:
        for mb in step[0]:
            lens = [b - a for row in mb for a, b, _ in row]
            real += sum(lens)
            computed += len(lens) * max(lens)
    return computed / real, len(data.train)


def bench_dataset(name: str, args, out_root: Path, cores: int) -> dict:
    base = [
        *DATASETS[name],
        *COMMON,
        f"model={args.model}",
        f"train.max_steps={args.steps}",
        *args.extra,
    ]
    ideal_epoch, n_train = padding_ideal_epoch(base, 8)
    result: dict = {
        "overrides": base,
        "train_samples": n_train,
        "padding_ideal_epoch": ideal_epoch,
        "setups": {},
    }
    for setup in args.setups:
        run_dir = out_root / f"{name}-{setup}"
        wait = wait_for_quiet(args.max_load, args.wait_each)
        t0 = time.time()
        out = run_child([*base, *SETUPS[setup]], run_dir, timeout=args.timeout)
        m = measure(out["steps"], args.warmup, cores)
        m.update(
            {
                "overrides": SETUPS[setup],
                "attn_implementation": out["attn"],
                "load_before": wait,
                "load_after": round(load1(), 2),
                "run_wall_s": round(time.time() - t0, 1),
                "torch_threads": out["torch_threads"],
                "peak_rss_mb": round(out["peak_rss_mb"]),
            }
        )
        result["setups"][setup] = m
        print(
            f"[bench] {name:5s} {setup:15s} real {m['real_tokens_per_s']:6.1f} tok/s "
            f"(cpu-normalised {m['real_tokens_per_s_cpu_normalised']:6.1f}), computed "
            f"{m['computed_tokens_per_s']:6.1f} tok/s, collate {m['collate_fraction']:.3%} of a step, "
            f"load {wait['load_when_started']:.2f} -> {m['load_after']:.2f}, {m['run_wall_s']:.0f} s, "
            f"peak {m['peak_rss_mb'] / 1024:.1f} GB",
            flush=True,
        )
        shutil.rmtree(run_dir, ignore_errors=True)  # the exported model is 0.5 GB
    pad = result["setups"].get("padding")
    if pad:
        ideal = pad["computed_tokens"] / pad["real_tokens"]
        result["ideal_ratio"] = ideal
        for setup, m in result["setups"].items():
            if setup == "padding":
                continue
            for suffix in ("", "_cpu_normalised"):
                ratio = m[f"real_tokens_per_s{suffix}"] / pad[f"real_tokens_per_s{suffix}"]
                m[f"achieved_ratio{suffix}"] = ratio
                m[f"achieved_over_ideal{suffix}"] = ratio / ideal
    return result


def markdown(record: dict) -> str:
    header = (
        "| data | setup | real tokens/s (wall) | real tokens/s (cpu-normalised) | speed-up wall / cpu-norm. "
        "| ideal | achieved / ideal, wall / cpu-norm. | MFU | collate / step | load before -> after |"
    )
    lines = [header, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in record["datasets"].items():
        for setup, m in r["setups"].items():
            if "achieved_ratio" in m:
                speed = f"{m['achieved_ratio']:.2f} / {m['achieved_ratio_cpu_normalised']:.2f}"
                of_ideal = f"{m['achieved_over_ideal']:.0%} / {m['achieved_over_ideal_cpu_normalised']:.0%}"
            else:
                speed, of_ideal = "1 (reference)", ""
            lines.append(
                f"| {name} | {setup} | {m['real_tokens_per_s']:.1f} | {m['real_tokens_per_s_cpu_normalised']:.1f} | "
                f"{speed} | {r.get('ideal_ratio', float('nan')):.2f} | {of_ideal} | "
                f"{format(m['mfu'], '.1%') if 'mfu' in m else ''} | {m['collate_fraction']:.2%} | "
                f"{m['load_before']['load_when_started']:.2f} -> {m['load_after']:.2f} |"
            )
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":  # one training run, in its own process
        child(sys.argv[4:] if sys.argv[3] == "--" else sys.argv[3:], Path(sys.argv[2]))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default="demo,lima")
    p.add_argument("--setups", default=",".join(SETUPS))
    p.add_argument(
        "--model", default="smollm2_135m", help="a configs/model option (tiny: a quick dry run)"
    )
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--max-load", type=float, default=1.0)
    p.add_argument(
        "--wait-max",
        type=float,
        default=1200.0,
        help="seconds to wait for a quiet machine at start",
    )
    p.add_argument(
        "--wait-each", type=float, default=60.0, help="seconds to wait for quiet before each run"
    )
    p.add_argument("--timeout", type=int, default=1800, help="seconds per training run")
    p.add_argument("--extra", nargs="*", default=[], help="more trainer overrides for every run")
    p.add_argument("--json", default="")
    p.add_argument("--markdown", default="", help="also write the table to this file")
    p.add_argument(
        "--add-mfu",
        default="",
        metavar="RECORD",
        help="add MFU to an existing --json record (benchmarks/train_mfu.py), no training",
    )
    args = p.parse_args()
    if args.add_mfu:
        record = json.loads(Path(args.add_mfu).read_text())
        check_same_machine(record)
        add_mfu(record, gemm_peak_flops(_threads()))
        Path(args.add_mfu).write_text(json.dumps(record, indent=2) + "\n")
        print(markdown(record))
        if args.markdown:
            Path(args.markdown).write_text(markdown(record) + "\n")
        return
    args.setups = [s for s in args.setups.split(",") if s]
    unknown = [s for s in args.setups if s not in SETUPS]
    if unknown or args.warmup >= args.steps:
        p.error(f"unknown setups {unknown}" if unknown else "--warmup must be < --steps")

    import torch

    from sft.config import shared_data_dir

    cores = os.cpu_count() or 1
    record: dict = {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": {
            "cpus": cores,
            "cpu": cpu_model(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "platform": platform.platform(),
        },
        "steps": args.steps,
        "warmup": args.warmup,
        "model": args.model,
        "load": wait_for_quiet(args.max_load, args.wait_max),
        "datasets": {},
    }
    if not record["load"]["quiet"]:
        print(
            f"[bench] WARNING: the machine stayed loaded (load {load1():.2f}); wall-clock numbers are noisy, "
            "compare the cpu-normalised ones",
            flush=True,
        )
    peaks = [gemm_peak_flops(_threads())]  # MFU's peak: before and after, the better one
    out_root = Path(tempfile.mkdtemp(prefix="sft-bench-train-"))
    try:
        for name in args.datasets.split(","):
            if (
                name == "lima"
                and not (Path(shared_data_dir()) / "lima" / "lima_messages.jsonl").is_file()
            ):
                print(f"[bench] skipping lima: not found under {shared_data_dir()}", flush=True)
                continue
            record["datasets"][name] = bench_dataset(name, args, out_root, cores)
    finally:
        shutil.rmtree(out_root, ignore_errors=True)
    record["load_at_end"] = round(load1(), 2)
    peaks.append(gemm_peak_flops(_threads()))
    add_mfu(record, max(peaks))
    record["gemm_peak_flops_measured"] = peaks
    table = markdown(record)
    print(table)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")


if __name__ == "__main__":
    main()
