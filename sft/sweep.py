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


def precheck(overrides: Sequence[str]) -> int:
    """Compose and validate every job of a sweep; raise one line naming the first bad job."""
    from sft.cli_config import compose_job

    own = [o for o in overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]
    jobs = sweep_jobs(own)
    for n, job in enumerate(jobs):
        try:
            compose_job([*job, "run_dir=/tmp/sft-sweep-precheck"])
        except UserError as e:
            raise UserError(f"sweep job {n} ({' '.join(job)}): {e}") from None
    return len(jobs)
