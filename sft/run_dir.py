"""The run directory at start-up: its config and data report, and resuming from its checkpoints.

    run_dir/config.yaml        the resolved config (secrets redacted)
    run_dir/data_report.json   what happened to every data row
    run_dir/checkpoints/       step-N/ (committed) and .tmp-step-N/ (half-written, removed here)

Invariant: a resumed run restarts from a checkpoint whose `compat_record` equals this run's
(refused in one line otherwise), at the same data position, and its step logs hold no line
past that checkpoint's step.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

from sft import checkpoint as ckpt
from sft.engine import Engine
from sft.errors import UserError
from sft.run_lock import RunLock

log = logging.getLogger("sft")


def lock(run_dir: Path, engine: Engine) -> RunLock | None:
    """Rank 0 takes the run_dir's lock; every rank learns whether it could (one collective), so
    a refused run stops everywhere before it writes anything."""
    held, refused = None, None
    if engine.main:
        try:
            held = RunLock(run_dir)
        except UserError as e:
            refused = e
    if engine.all_reduce([1.0 if refused is None else 0.0])[0] < engine.world:
        raise refused or UserError(f"run_dir {run_dir} is in use by another run (see rank 0)")
    return held


def compat_record(
    *,
    world: int,
    engine: str,
    micro_batch_size: int,
    grad_accum: int,
    batching: dict,
    model_name: str,
    model,
    pieces,
    n_tokens: int,
    seed: int,
) -> dict:
    """What must match for a checkpoint to resume exactly (checked before anything is loaded)."""
    shapes = [(n, list(getattr(p, "ds_shape", p.shape))) for n, p in model.named_parameters()]
    return {
        "world_size": world,
        "engine": engine,
        "micro_batch_size": micro_batch_size,
        "grad_accum": grad_accum,
        "collator": f"{batching['collator']}/{batching['strategy']}/{batching['capacity']}",
        "model": model_name,
        "model_shapes": ckpt.fingerprint(shapes),
        "data": ckpt.fingerprint(pieces, n_tokens),
        "seed": seed,
    }


def prepare(run_dir: Path, config_yaml: str, data_report: dict) -> None:
    """Rank 0: create run_dir, write config.yaml and data_report.json, drop half-written saves."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(config_yaml)
    for p in ckpt.remove_stale(run_dir / "checkpoints"):
        log.warning("removed a half-written checkpoint %s", p)
    (run_dir / "data_report.json").write_text(json.dumps(data_report, indent=2))


def resume(
    resume_from: str,
    run_dir: Path,
    *,
    engine: Engine,
    compat: dict,
    scheduler,
    locate: Callable[[int], tuple[int, int]],
    total_steps: int,
) -> tuple[int, dict | None]:
    """(step, totals) to start from; restores model, optimizer, RNG and schedule (collective)."""
    root = run_dir / "checkpoints"
    r = resume_from
    if r == "latest":  # rank 0 verifies every file's sha256 and decides for all ranks
        found = ckpt.latest_checkpoint(root, verify_sums=True) if engine.main else None
        chosen = int(engine.all_reduce([ckpt.step_of(found) + 1 if found else 0])[0])
        path = root / f"step-{chosen - 1}" if chosen else None
    else:
        path = None if r == "none" else Path(r)
        problem = ckpt.verify(path) if path is not None and engine.main else None
        if problem is not None:
            raise UserError(f"train.resume_from={r}: not a usable checkpoint: {problem}")
    step, totals = 0, None
    if path is not None:
        state = ckpt.load_checkpoint(engine.accelerator, path, compat)  # refuses another setup
        step, totals = state["step"], state["totals"]
        scheduler.load_state_dict(state["scheduler"])
        where = [state["epoch"], state["step_in_epoch"]]
        if state["epoch"] >= 0 and step < total_steps and list(locate(step)) != where:
            raise UserError(
                f"cannot resume from {path}: its data position (epoch {where[0]}, step "
                f"{where[1]}) differs from this run's plan; use a new run_dir"
            )
        if engine.main:
            print(f"[sft] resumed from {path} at step {step}", flush=True)
    # one line per step: drop what a killed run logged after the checkpoint we restart from
    keep = step if path is not None else -1
    if engine.main:
        ckpt.truncate_step_log(run_dir / "metrics.jsonl", keep)
    ckpt.truncate_step_log(run_dir / "samples" / f"rank{engine.rank}.jsonl", keep)
    return step, totals
