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


def with_engine(config_yaml: str, kind: str) -> str:
    """config.yaml with `distributed.name` set to the engine in force (what auto resolved to)."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(config_yaml)
    if cfg.get("distributed", {}).get("name") == kind:
        return config_yaml
    cfg.distributed.name = kind
    return OmegaConf.to_yaml(cfg)


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


# values that do not change what is trained, so a resumed run may change them freely
RESUME_FREE = {
    "run_name", "run_dir", "experiment", "model.name", "data.name", "data.num_proc",
    "train.log_every", "train.eval_every", "train.eval_at_start", "train.eval_micro_batch_size",
    "train.save_every", "train.keep_last", "train.resume_from", "train.max_bad_steps",
    "train.progress", "train.report_to", "train.record_samples", "train.checkpoint_hf_model",
    "train.benchmark_tasks", "train.benchmark_limit", "train.allow_config_change",
    "loss.impl", "loss.chunk_tokens",  # the same loss to rounding, another memory profile
    "train.memory_check", "train.memory_margin",  # a start-up check only
}  # fmt: skip


def training_config(cfg, defaults: bool = False) -> dict:
    """The flattened JobConfig values a checkpoint must match on resume (all but RESUME_FREE;
    the engine, world size, batch, model shapes and data are compared on their own); with
    `defaults`, each key's default instead (keys without one left out)."""
    import dataclasses
    import enum

    flat: dict = {}

    def walk(obj, prefix: str) -> None:
        for f in dataclasses.fields(obj):
            value, key = getattr(obj, f.name), prefix + f.name
            if dataclasses.is_dataclass(value):
                walk(value, key + ".")
            elif key in RESUME_FREE or key.startswith("distributed."):
                continue
            elif not defaults:
                flat[key] = value
            elif f.default is not dataclasses.MISSING:
                flat[key] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                flat[key] = f.default_factory()

    walk(cfg, "")
    flat = {k: v.value if isinstance(v, enum.Enum) else v for k, v in flat.items()}
    return json.loads(json.dumps(flat, default=str))


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
    cfg,
) -> dict:
    """What must match for a checkpoint to resume exactly (checked before anything is loaded):
    the setup, and `cfg`'s training config; its defaults ride along for checkpoints written
    before a key existed (`checkpoint.config_changes`)."""
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
        "config": training_config(cfg),
        "config_defaults": training_config(cfg, defaults=True),
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
    optim=None,
    allow_changes: bool = False,
) -> tuple[int, dict | None, list[str]]:
    """(step, totals, accepted config changes) to start from; restores model, optimizer, RNG
    and schedule (collective). With accepted changes the optimizer takes `optim`'s values."""
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
    step, totals, changes = 0, None, []
    if path is not None:  # refuses another setup, or another config unless allowed
        state, changes = ckpt.load_checkpoint(engine.accelerator, path, compat, allow_changes)
        step, totals = state["step"], state["totals"]
        scheduler.load_state_dict(state["scheduler"])
        if changes:
            _apply_optim(scheduler, optim)
            if engine.main:
                print(f"[sft] resuming with a changed config: {'; '.join(changes)}", flush=True)
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
    return step, totals, changes


def _apply_optim(scheduler, o) -> None:
    """Give the restored optimizer the new config's lr, betas, eps and weight decay, from the
    next step on (the schedule keeps its position; its peak becomes the new lr)."""
    scheduler.base_lrs = [o.lr for _ in scheduler.base_lrs]
    groups = scheduler.optimizer.param_groups
    for i, (g, fn) in enumerate(zip(groups, scheduler.lr_lambdas)):
        g["lr"] = o.lr * fn(scheduler.last_epoch)
        g["betas"], g["eps"] = tuple(o.betas), o.eps
        g["weight_decay"] = o.weight_decay if i == 0 else 0.0
    scheduler._last_lr = [g["lr"] for g in groups]  # what get_last_lr() reports for this step
