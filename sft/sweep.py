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

from collections.abc import Sequence
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


def precheck(overrides: Sequence[str]) -> list[list[str]]:
    """Compose and validate every job of a sweep; raise one line naming the first bad job.
    Returns the jobs' overrides."""
    from sft.cli_config import compose_job

    jobs = sweep_jobs([o for o in overrides if not _is_hydra(o)])
    for n, job in enumerate(jobs):
        try:
            compose_job([*job, "run_dir=/tmp/sft-sweep-precheck"])
        except UserError as e:
            raise UserError(f"sweep job {n} ({' '.join(job)}): {e}") from None
    return jobs


def _is_hydra(override: str) -> bool:
    return override.lstrip("+~").startswith(("hydra.", "hydra/"))


def pin_sweep_dir(argv: list[str], first_job: Sequence[str]) -> str:
    """Resolve `hydra.sweep.dir` once, here, and pin it in argv: a remote launcher
    (hydra/launcher=slurm) resolves the config again in every job, where `now` and SLURM_JOB_ID
    differ, so the jobs would land in folders of their own. Returns the folder."""
    from omegaconf import OmegaConf

    from sft.cli_config import compose

    hydra_args = [a for a in argv[1:] if not a.startswith("-") and _is_hydra(a)]
    cfg = compose([*first_job, *hydra_args, "run_dir=/tmp/sft-sweep-precheck"], hydra_config=True)
    folder = str(OmegaConf.select(cfg, "hydra.sweep.dir"))
    argv[:] = [a for a in argv if not a.startswith("hydra.sweep.dir=")]
    argv.append(f"hydra.sweep.dir={folder}")
    return folder


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
