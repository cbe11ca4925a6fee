"""Train a causal LM with padding or packing.

    python sft/train.py model=tiny data=demo collator=packing train.max_steps=4
    accelerate launch --config_file launch/accelerate/zero3.yaml sft/train.py distributed=zero3 ...
    sft-train -m collator=padding,packing          # a sweep (Hydra multirun)

Compose the config, build the recipe, train, close. Exit codes: 0 done, 2 bad input (one line on
stderr), 3 too many non-finite steps, 4 out of memory, 75 pre-empted with a checkpoint saved.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hydra
from omegaconf import DictConfig

from sft.cli_config import CONFIG_DIR, precheck_overrides
from sft.errors import UserError

_exit_code = 0


def _record(fn):
    """torch elastic's @record (imported lazily: the config pre-check stays fast): an uncaught error
    is written to the launcher's error file, so its summary names the failing rank and the cause."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from torch.distributed.elastic.multiprocessing.errors import record

        return record(fn)(*args, **kwargs)

    return wrapper


@hydra.main(config_path=CONFIG_DIR, config_name="train", version_base="1.3")
@_record
def run(cfg: DictConfig) -> None:
    global _exit_code
    import torch
    from torch.distributed.elastic.multiprocessing.errors import get_error_handler

    from sft.config import to_job_config
    from sft.trainer import EXIT_OOM, Recipe, resolved_yaml

    try:
        recipe = Recipe(to_job_config(cfg), resolved_yaml(cfg))
        try:
            recipe.setup()
            _exit_code = recipe.train()
        except (torch.OutOfMemoryError, MemoryError) as oom:
            msg = recipe.oom_message()
            print(f"error: {msg}", file=sys.stderr, flush=True)
            try:  # the error file's traceback (shown in the launcher's summary) ends with the advice
                raise RuntimeError(msg) from oom
            except RuntimeError as advice:
                get_error_handler().record_exception(advice)
            _exit_code = EXIT_OOM
        finally:
            recipe.close()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        _exit_code = UserError.exit_code


def main() -> None:
    try:
        precheck_overrides(sys.argv[1:])
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(UserError.exit_code)
    pin_hydra_run_dir(sys.argv)
    run()
    sys.exit(_exit_code)


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
