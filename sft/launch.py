"""Turn a SLURM allocation into this node's launcher command, the run directory and sweep jobs.

    python -m sft.launch slurm-args [--procs-per-node N] [-- OVERRIDES...]   # full command, one node
    python -m sft.launch slurm-args --args-only                              # accelerate args only
    python -m sft.launch run-dir [-- OVERRIDES...]        # outputs/<experiment>/<job id>
    python -m sft.launch sweep collator=padding,packing model=tiny   # one line per job
    python -m sft.launch trainer-exit RUN_DIR --since EPOCH_S   # exit code in a fresh summary.json

Invariant: every node of a job computes the same world (node count, main address, port, processes
per node) from the job's SLURM variables alone, so the nodes meet without talking to each other
first; only `machine_rank` (SLURM_NODEID) differs. The run directory depends only on the job id,
which survives `scontrol requeue`, so a requeued job finds and resumes its own checkpoints.
The job's world from SLURM variables is sft/slurm_world.py; `run_dir_for_job`, `expand_sweep`
and the checks here are pure (environment in, values out); the CLI reads `os.environ`, runs
`scontrol`, asks torch for the GPU count and reads the trainer's summary.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from sft.choice import Engine
from sft.errors import UserError, exit_on_user_error
from sft.slurm_world import (
    LaunchArgs,
    positive_int,
    procs_per_node_from_env,
    require,
    scontrol_hostnames,
    slurm_launch_args,
)

ACCELERATE_DIR = Path("launch") / "accelerate"
# the engines a shipped accelerate config exists for (auto follows whichever one is launched)
DISTRIBUTED_NAMES = tuple(v for v in Engine.values() if v != "auto")


def override_value(overrides: Sequence[str], key: str) -> str | None:
    """The value the last `key=value` (or `+key=` / `++key=`) override gives, or None."""
    value = None
    for item in overrides:
        name, sep, rest = item.partition("=")
        if sep and name.lstrip("+") == key:
            value = rest
    return value


def accelerate_config_for(distributed: str, num_machines: int, root: Path) -> Path:
    """The shipped accelerate config for a `distributed=` choice (multi-node ZeRO-3 uses srun's)."""
    if distributed not in DISTRIBUTED_NAMES:
        raise UserError(f"distributed={distributed!r} is not one of {list(DISTRIBUTED_NAMES)}")
    name = "multinode_zero3" if distributed == "zero3" and num_machines > 1 else distributed
    return root / ACCELERATE_DIR / f"{name}.yaml"


def check_config_fits(config: Mapping, args: LaunchArgs, use_cpu: bool, gpus_here: int) -> None:
    """Refuse an accelerate config that cannot run this world, before any process starts.

    use_cpu: ACCELERATE_USE_CPU is set. gpus_here: CUDA devices visible on this node (only
    consulted for MULTI_GPU configs without use_cpu).
    """
    kind = str(config.get("distributed_type", ""))
    if kind == "NO" and args.num_processes > 1:
        raise UserError(
            f"accelerate config runs one process but the job asks for {args.num_processes}: "
            "use launch/accelerate/ddp.yaml (distributed=ddp) or one node with --procs-per-node 1"
        )
    if kind == "MULTI_GPU" and args.num_processes < 2:
        raise UserError(
            "a MULTI_GPU accelerate config needs at least 2 processes; "
            "use launch/accelerate/single.yaml (distributed=single) for one"
        )
    if kind == "MULTI_GPU" and not use_cpu and gpus_here == 0:
        raise UserError(
            "no GPU on this node: set ACCELERATE_USE_CPU=true for ddp over gloo "
            "(without it every CPU process would train alone, unsynchronised)"
        )
    if kind == "DEEPSPEED" and use_cpu:
        raise UserError(
            "ACCELERATE_USE_CPU=true makes accelerate drop DeepSpeed: unset it for zero3 runs "
            "(DeepSpeed finds the CPU by itself)"
        )
    if kind == "DEEPSPEED" and args.num_machines > 1:
        launcher = (config.get("deepspeed_config") or {}).get("deepspeed_multinode_launcher")
        if launcher != "standard":
            raise UserError(
                "a multi-node DeepSpeed run under srun needs `deepspeed_multinode_launcher: "
                "standard` (one launcher per node, no ssh): use launch/accelerate/multinode_zero3.yaml"
            )
    if kind == "FSDP" and use_cpu:
        raise UserError(
            "accelerate drops its FSDP plugin on CPU (the run would silently not shard): "
            "use distributed=ddp or zero3 on CPU nodes"
        )


def launch_command(
    args: LaunchArgs,
    overrides: Sequence[str],
    python: str,
    script: str,
    accelerate_config: Path,
    config: Mapping,
) -> list[str]:
    """This node's full command: launcher, training script, then Hydra overrides.

    A one-process run with a non-distributed config starts the script directly, so the trainer's
    own exit code (75 when pre-empted) reaches SLURM; everything else goes through
    `accelerate launch`, whose torchrun agent forwards SIGTERM to the workers.
    """
    if str(config.get("distributed_type", "")) == "NO":
        return [python, script, *overrides]
    return [
        python,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(accelerate_config),
        *args.accelerate_args(),
        script,
        *overrides,
    ]


def run_dir_for_job(env: Mapping[str, str], overrides: Sequence[str], root: str = "outputs") -> str:
    """`run_dir=` from the overrides if given, else <root>/<experiment>/<SLURM_JOB_ID>.

    The same folder the trainer's Hydra config picks by itself inside a SLURM job
    (`outputs/${experiment}/${SLURM_JOB_ID}`). The experiment is the last `experiment=` override,
    else `default` (the trainer's own default). Array tasks have their own SLURM_JOB_ID.
    """
    explicit = override_value(overrides, "run_dir")
    if explicit:
        return explicit
    experiment = override_value(overrides, "experiment") or "default"
    return f"{root}/{experiment}/{require(env, 'SLURM_JOB_ID')}"


def expand_sweep(overrides: Sequence[str]) -> list[list[str]]:
    """The jobs of a sweep as Hydra expands them (sft/sweep.py): `a=1,2 b=x` ->
    [[a=1, b=x], [a=2, b=x]], first key slowest; range(), choice() and bracketed lists too."""
    from sft.sweep import sweep_jobs

    return sweep_jobs(overrides)


def recorded_exit_code(run_dir: Path, since: float) -> int | None:
    """The exit code the trainer wrote to run_dir/summary.json at or after `since` (epoch seconds).

    None when there is no such summary (not written, unreadable, or left by an earlier attempt).
    The batch script requeues on 75 from here: through torchrun every worker exit becomes 1.
    """
    path = Path(run_dir) / "summary.json"
    try:
        if path.stat().st_mtime < since:
            return None
        code = json.loads(path.read_text()).get("exit_code")
    except (OSError, ValueError, AttributeError):
        return None
    return code if isinstance(code, int) else None


def _cuda_device_count() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _load_yaml(path: Path) -> dict:
    import yaml

    if not path.is_file():
        raise UserError(f"accelerate config {path} does not exist; pick one in {ACCELERATE_DIR}/")
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def _preset_distributed(overrides: list[str]) -> str | None:
    """The `distributed.name` an experiment preset selects (None when it selects none)."""
    from sft.cli_config import compose

    cfg = compose([*overrides, "run_dir=/tmp/sft-launch-probe"])
    name = cfg.distributed.name
    return None if name in ("single", "auto") else str(name)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _cmd_slurm_args(ns: argparse.Namespace, env: Mapping[str, str]) -> str:
    explicit = ns.procs_per_node or (
        positive_int(env["SFT_PROCS_PER_NODE"], "SFT_PROCS_PER_NODE")
        if env.get("SFT_PROCS_PER_NODE", "").strip()
        else None
    )
    if explicit is None and procs_per_node_from_env(env) is None:
        explicit = _cuda_device_count() or None
    args = slurm_launch_args(env, explicit, hostnames=scontrol_hostnames)
    root = Path(ns.root)
    overrides = list(ns.overrides)
    distributed = override_value(overrides, "distributed")
    if distributed == "auto":
        distributed = None
    if distributed is None and override_value(overrides, "experiment") is not None:
        distributed = _preset_distributed(
            overrides
        )  # a preset (e.g. the paper's) chooses its engine
    if distributed is None:
        distributed = "single" if args.num_processes == 1 else "ddp"
        overrides.insert(0, f"distributed={distributed}")
    if ns.accelerate_config in ("", "auto"):
        config_path = accelerate_config_for(distributed, args.num_machines, root)
    else:
        config_path = Path(ns.accelerate_config)
    config = _load_yaml(config_path if config_path.is_absolute() else root / config_path)
    use_cpu = _truthy(env.get("ACCELERATE_USE_CPU"))
    gpus_here = (
        0 if use_cpu or config.get("distributed_type") != "MULTI_GPU" else _cuda_device_count()
    )
    check_config_fits(config, args, use_cpu=use_cpu, gpus_here=gpus_here)
    if ns.args_only:
        words = ["--config_file", str(config_path), *args.accelerate_args()]
    else:
        words = launch_command(args, overrides, ns.python, ns.script, config_path, config)
    return shlex.join(words)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sft.launch", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("slurm-args", help="print this node's launcher command (shell-quoted)")
    p.add_argument(
        "--procs-per-node",
        type=int,
        default=None,
        help="worker processes per node (default: SFT_PROCS_PER_NODE, SLURM's GPUs, "
        "then the CUDA device count)",
    )
    p.add_argument(
        "--accelerate-config",
        default=os.environ.get("ACCELERATE_CONFIG", "auto"),
        help="accelerate YAML, or `auto` to pick launch/accelerate/<distributed>.yaml",
    )
    p.add_argument("--python", default=sys.executable, help="interpreter for the launcher")
    p.add_argument("--script", default="sft/train.py", help="training script")
    p.add_argument("--root", default=".", help="project root holding launch/")
    p.add_argument(
        "--args-only",
        action="store_true",
        help="print only the accelerate launch options (config and world)",
    )
    p.add_argument("overrides", nargs="*", help="Hydra overrides passed to the trainer")

    p = sub.add_parser("run-dir", help="print the run directory pinned to the SLURM job id")
    p.add_argument("--root", default="outputs", help="folder holding <experiment>/ folders")
    p.add_argument("overrides", nargs="*", help="Hydra overrides (experiment=, run_dir= are read)")

    p = sub.add_parser(
        "trainer-exit",
        help="print the exit code the trainer recorded in summary.json "
        "since a time (nothing if none)",
    )
    p.add_argument("run_dir", help="the run directory")
    p.add_argument(
        "--since", type=float, default=0.0, help="ignore summaries older than this (epoch s)"
    )

    p = sub.add_parser("sweep", help="print one shell-quoted override line per sweep job")
    p.add_argument("overrides", nargs="+", help="key=v1,v2 ... (comma lists are swept)")
    return parser


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: print the requested value on stdout (errors: one line on stderr)."""
    ns = _parser().parse_args(argv)
    env = dict(os.environ)
    if ns.command == "slurm-args":
        print(_cmd_slurm_args(ns, env))
    elif ns.command == "run-dir":
        print(run_dir_for_job(env, ns.overrides, ns.root))
    elif ns.command == "trainer-exit":
        code = recorded_exit_code(Path(ns.run_dir), ns.since)
        print("" if code is None else code)
    else:
        for job in expand_sweep(ns.overrides):
            print(shlex.join(job))
    return 0


if __name__ == "__main__":
    sys.exit(main())
