"""Model FLOPs utilisation of bench_train.py's setups, from the trainer's own plan.

    python benchmarks/bench_train.py ... --json R.json          # new records carry MFU
    python benchmarks/bench_train.py --add-mfu R.json           # recomputed, on R's machine only

The planner is deterministic (seed, epoch 0), so the samples of every measured step are
re-planned exactly from the dataset and the setup's overrides (sft/epochs.py, as the trainer
plans them); the re-planned real tokens of the measured steps must equal the tokens the run
logged, or nothing is written. Model FLOPs are benchmarks/mfu.py's (real tokens only: pads and attention
across the samples of a packed row count for nothing) with the recomputation of gradient
checkpointing counted, as a run with it does that work: the decoder layers run their forward
twice (8 instead of 6 x body weights x tokens, and 8/6 of the attention term); the LM head is
outside the checkpointed layers (6 x).

Invariant: every setup of one record is divided by the same peak (the best fp32 matmul rate,
benchmarks/mfu.py), so MFU ratios between setups are ratios of model FLOPs per second.
"""

from __future__ import annotations

from sft.plan_steps import train_flops

# options renamed since older records were made; none of them changes data or planning
RENAMED = {"train.tensorboard=false": "train.report_to=none"}


def cpu_model() -> str:
    """This machine's CPU: model name, cores, and the widest vector unit (the fp32 peak's factors)."""
    import os
    from pathlib import Path

    info = Path("/proc/cpuinfo")
    text = info.read_text() if info.is_file() else ""
    name = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if "model name" in ln), "")
    flags = next(
        (ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []
    )
    vector = next((f for f in ("avx512f", "avx2", "avx", "sse4_2") if f in flags), "")
    return f"{name or 'unknown'}, {os.cpu_count()} cores, {vector or 'unknown vector unit'}"


def check_same_machine(record: dict) -> None:
    """MFU divides by this machine's matmul rate: refuse a record made on another machine."""
    made_on, here = record.get("machine", {}).get("cpu"), cpu_model()
    if made_on != here:
        raise SystemExit(
            f"error: the record was made on {made_on or 'an unrecorded CPU'}, this is {here}: "
            "MFU needs the peak of the machine that ran the steps; rerun the benchmark here"
        )


def measured_steps(overrides: list[str], steps: list[int]) -> tuple[object, list[list[int]]]:
    """The model shape, and the sample lengths of each of `steps` (1-based) as the run planned them."""
    from sft.data.cli import load
    from sft.epochs import Epochs
    from sft.plan_memory import resolve_shape

    loaded = load([RENAMED.get(o, o) for o in overrides])
    cfg, data = loaded.cfg, loaded.data
    batching = cfg.collator.build(cfg.data.max_length)
    epochs = Epochs.for_run(batching, data, cfg.train, world_size=1, seed=cfg.seed)
    plan = epochs.plan(0)
    lengths = []
    for s in steps:
        step = plan.steps[s - 1]
        lengths.append([b - a for rank in step for mb in rank for row in mb for a, b, _ in row])
    m = cfg.model
    shape = resolve_shape(m.name_or_path, m.tiny_hidden_size, m.tiny_layers, m.tiny_vocab_size)
    return shape, lengths


def model_flops(shape, lengths: list[int], supervised: int, checkpointing: bool) -> float:
    """Forward + backward model FLOPs of samples of `lengths` (recomputation counted)."""
    real = sum(lengths)
    attention_sq = float(sum(n * n for n in lengths))
    layers = train_flops(shape, real, 0, attention_sq) * (8 / 6 if checkpointing else 1)
    return layers + train_flops(shape, 0, supervised, 0.0)


def add_mfu(record: dict, peak_flops: float) -> None:
    """`mfu` and `model_flops` for every setup of `record` (bench_train.py's), in place."""
    record["gemm_peak_flops"] = peak_flops
    for name, result in record["datasets"].items():
        base = result["overrides"]
        checkpointing = "model.gradient_checkpointing=true" in base
        for setup, m in result["setups"].items():
            shape, per_step = measured_steps([*base, *m["overrides"]], m["steps"])
            real = sum(sum(x) for x in per_step)
            if real != m["real_tokens"]:
                raise RuntimeError(
                    f"{name}/{setup}: re-planned steps {m['steps']} hold {real} real tokens, the "
                    f"run logged {m['real_tokens']}: not the same samples, no MFU written"
                )
            lengths = [n for x in per_step for n in x]
            flops = model_flops(shape, lengths, m["supervised_tokens"], checkpointing)
            m["model_flops"] = flops
            m["mfu"] = flops / m["wall_s"] / peak_flops
