"""Sweeps in Hydra's own override grammar: the job list of a sweep, and its pre-check.

    sweep_jobs(["collator=padding,packing", "seed=range(0,2)"])
      -> [["collator=padding", "seed=0"], ["collator=padding", "seed=1"],
          ["collator=packing", "seed=0"], ["collator=packing", "seed=1"]]

Parsed by Hydra's OverridesParser and expanded by its BasicSweeper (first key slowest), so
`sft-train -m`, `launch/slurm/sweep.sh` and the pre-check all see exactly the jobs Hydra runs:
comma lists, range(), choice(), glob() and quoted or bracketed values alike.

Invariant: every job of a sweep composes and validates before the first one starts (`precheck`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

from sft.errors import UserError


def sweep_jobs(overrides: Sequence[str]) -> list[list[str]]:
    """The override list of every job of a sweep, in Hydra's order."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except OverrideParseException as e:
        raise UserError(f"cannot parse the sweep override {e.override!r}: {e.message}") from None
    batches = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    return [list(job) for batch in batches for job in batch]


def precheck(overrides: Sequence[str]) -> tuple[list[list[str]], str]:
    """Compose and validate every job of a sweep; raise one line naming the first bad job.
    Returns the jobs' overrides and the first job's `experiment`."""
    from sft.cli_config import compose_job

    own = [o for o in overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]
    jobs = sweep_jobs(own)
    experiment = "default"
    for n, job in enumerate(jobs):
        try:
            cfg, _ = compose_job([*job, "run_dir=/tmp/sft-sweep-precheck"])
        except UserError as e:
            raise UserError(f"sweep job {n} ({' '.join(job)}): {e}") from None
        experiment = cfg.experiment if n == 0 else experiment
    return jobs, experiment


def pinned_sweep_dir(experiment: str, env: Mapping[str, str], now: datetime) -> str:
    """The sweep folder as configs/train.yaml names it, resolved once, here: a remote launcher
    (hydra/launcher=slurm) resolves the config again in every job, where `now` and SLURM_JOB_ID
    differ, so the jobs would land in folders of their own."""
    stamp = env.get("SLURM_JOB_ID") or f"{now:%Y%m%d-%H%M%S}"
    return f"outputs/{experiment}/sweep-{stamp}"


def pin_sweep_dir(argv: list[str], experiment: str, env: Mapping[str, str], now: datetime) -> str:
    """The sweep's folder: `hydra.sweep.dir=` when given, else `pinned_sweep_dir` (appended to
    argv for Hydra)."""
    given = [a.split("=", 1)[1] for a in argv[1:] if a.startswith("hydra.sweep.dir=")]
    if given:
        return given[-1]
    pinned = pinned_sweep_dir(experiment, env, now)
    argv.append(f"hydra.sweep.dir={pinned}")
    return pinned


EXIT_FILE = "exit_code"  # in every sweep job's output dir: the job's exit code, as text


def write_exit_code(job_dir: Path, code: int) -> None:
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / EXIT_FILE).write_text(f"{code}\n")


def job_exit_codes(sweep_dir: Path, jobs: Sequence[Sequence[str]]) -> list[tuple[str, int]]:
    """(overrides, exit code) of every job from the `exit_code` file of its output dir, for
    launchers that run the jobs in other processes (hydra/launcher=slurm); a job without one
    never finished its task (killed, or its node failed): 1."""
    codes = []
    for n, job in enumerate(jobs):
        found = sorted(sweep_dir.glob(f"{n}-*/{EXIT_FILE}"))
        try:
            code = int(found[0].read_text().strip()) if found else 1
        except (OSError, ValueError):
            code = 1
        codes.append((" ".join(job) or "(defaults)", code))
    return codes
