"""Train a causal LM with padding or packing.

    python sft/train.py model=tiny data=demo collator=packing train.max_steps=4
    accelerate launch --config_file launch/accelerate/zero3.yaml sft/train.py distributed=zero3 ...
    sft-train -m collator=padding,packing          # a sweep (Hydra multirun)

Compose the config (once, by Hydra), build the recipe, train, close. Exit codes: 0 done, 2 bad
input (one line on stderr), 3 too many non-finite steps, 4 out of memory, 75 pre-empted with a
checkpoint saved. A sweep exits with the first non-zero code of its jobs.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hydra
from omegaconf import DictConfig, OmegaConf

from sft.cli_config import CONFIG_DIR, error_line
from sft.errors import UserError
from sft.hooks import StepHooks

_HOOKS: list[StepHooks] = []  # set by main(hooks=...) for the tests' fault injection
_JOBS: list[tuple[str, int]] = []  # (overrides, exit code) of every job run (several in a sweep)


def _record(fn):
    """torch elastic's @record (imported lazily: a config error stays fast): an uncaught error
    is written to the launcher's error file, so its summary names the failing rank and the cause."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from torch.distributed.elastic.multiprocessing.errors import record

        return record(fn)(*args, **kwargs)

    return wrapper


def train_job(cfg: DictConfig, hooks: StepHooks | None = None) -> int:
    """One training job from a composed config; returns its exit code."""
    import logging

    import torch
    from torch.distributed.elastic.multiprocessing.errors import get_error_handler

    if not torch.cuda.is_available():  # else DeepSpeed, imported by Accelerate, warns on every run
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    for name in ("accelerate", "deepspeed"):  # their per-rank INFO lines say nothing to act on
        logging.getLogger(name).setLevel(logging.WARNING)
    for handler in logging.getLogger().handlers:  # tied embeddings are saved once, as intended
        handler.addFilter(lambda r: "Removed shared tensor" not in r.getMessage())
    from sft.config import to_job_config
    from sft.engine import close_distributed
    from sft.io_errors import EXIT_IO, failure_line, storage_failure
    from sft.oom import oom_message
    from sft.trainer import EXIT_OOM, Recipe

    try:
        job = to_job_config(cfg)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return UserError.exit_code
    recipe = None
    try:
        recipe = Recipe(job, OmegaConf.to_yaml(cfg, resolve=True), hooks)
        return recipe.train()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return UserError.exit_code
    except (torch.OutOfMemoryError, MemoryError) as oom:
        eng = recipe.engine if recipe is not None else None
        msg = oom_message(
            job,
            rank=eng.rank if eng else 0,
            step=(recipe.step + 1) if recipe is not None else 1,
            ds_config=eng.ds_config if eng else None,
            cuda=eng.cuda if eng else False,
        )
        print(f"error: {msg}", file=sys.stderr, flush=True)
        try:  # the error file's traceback (shown in the launcher's summary) ends with the advice
            raise RuntimeError(msg) from oom
        except RuntimeError as advice:
            get_error_handler().record_exception(advice)
        return EXIT_OOM
    except Exception as e:
        failure = storage_failure(e, job.run_dir)
        if failure is None:
            raise
        print(f"error: {failure_line(*failure, job.run_dir)}", file=sys.stderr, flush=True)
        if recipe is not None:
            recipe.write_failure_summary(EXIT_IO)
        return EXIT_IO
    finally:
        if recipe is not None:
            recipe.close()
        else:
            close_distributed(None)


@hydra.main(config_path=CONFIG_DIR, config_name="train", version_base="1.3")
@_record
def run(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    label = " ".join(hc.overrides.task) or "(defaults)"
    code = train_job(cfg, _HOOKS[0] if _HOOKS else None)
    _JOBS.append((label, code))
    if str(hc.mode) == "RunMode.MULTIRUN":  # a launcher may run it elsewhere: leave the code
        from sft.sweep import write_exit_code

        write_exit_code(Path(hc.runtime.output_dir), code)


def verify_checkpoint(path: str) -> int:
    """`sft-train --verify-checkpoint PATH`: check one checkpoint's files and sha256 sums."""
    from sft.checkpoint import verify

    problem = verify(Path(path))
    if problem is None:
        print(f"ok: {path}: every file matches the manifest's size and sha256")
        return 0
    print(f"error: {path}: {problem}", file=sys.stderr)
    return UserError.exit_code


def main(hooks: StepHooks | None = None) -> None:
    if sys.argv[1:2] == ["--verify-checkpoint"]:
        if len(sys.argv) != 3:
            print("error: usage: sft-train --verify-checkpoint PATH", file=sys.stderr)
            sys.exit(UserError.exit_code)
        sys.exit(verify_checkpoint(sys.argv[2]))
    _HOOKS[:] = [hooks] if hooks is not None else []
    os.environ["HYDRA_FULL_ERROR"] = "1"  # composition errors reach us: one line, not Hydra's text
    sweep = any(a in ("-m", "--multirun") for a in sys.argv[1:])
    jobs, sweep_dir = [], ""
    try:
        if sweep:  # every job composes and validates before the first one starts
            from sft.sweep import pin_sweep_dir, precheck

            jobs = precheck([a for a in sys.argv[1:] if not a.startswith("-")])
            sweep_dir = pin_sweep_dir(sys.argv, jobs[0])
        pin_hydra_run_dir(sys.argv)
        run()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        _end(UserError.exit_code)
    except Exception as e:
        line = error_line(e)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr, flush=True)
        _end(UserError.exit_code)
    if sweep:
        if not _JOBS and jobs:  # a launcher ran the jobs elsewhere (hydra/launcher=slurm)
            from sft.sweep import job_exit_codes

            _JOBS[:] = job_exit_codes(Path(sweep_dir), jobs)
        print_sweep_table(_JOBS)
    _end(next((code for _, code in _JOBS if code != 0), 0))


def _end(code: int) -> None:
    """Exit; after a multi-process run through sft/engine.py's end_process (no torch import)."""
    engine = sys.modules.get("sft.engine")
    if engine is None:
        sys.exit(code)
    engine.end_process(code)


def print_sweep_table(jobs: list[tuple[str, int]]) -> None:
    """The end of a sweep: every job's exit code, and how many failed."""
    failed = sum(code != 0 for _, code in jobs)
    print(f"[sft] sweep: {len(jobs)} job(s), {failed} failed", flush=True)
    print("  job  exit  overrides")
    for n, (label, code) in enumerate(jobs):
        print(f"  {n:>3}  {code:>4}  {label}", flush=True)


def pin_hydra_run_dir(argv: list[str]) -> None:
    """With an explicit `run_dir=X`, Hydra's own run dir is X too (no stray empty folder)."""
    given = [a.split("=", 1)[1] for a in argv[1:] if a.startswith("run_dir=")]
    if (
        given
        and not any(a.startswith("hydra.run.dir=") for a in argv)
        and "-m" not in argv
        and "--multirun" not in argv
    ):
        argv.append(f"hydra.run.dir={given[-1]}")


if __name__ == "__main__":
    main()
