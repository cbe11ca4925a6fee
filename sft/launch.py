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
`slurm_launch_args`, `run_dir_for_job`, `expand_sweep` and the checks are pure (environment in,
values out); the CLI reads `os.environ`, runs `scontrol`, asks torch for the GPU count and reads
the trainer's summary.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sft.errors import UserError, exit_on_user_error

PORT_BASE = 20000  # derived ports fall in [20000, 30000): below Linux's ephemeral range (32768+)
PORT_SPAN = 10000
ACCELERATE_DIR = Path("launch") / "accelerate"
DISTRIBUTED_NAMES = ("single", "ddp", "zero3", "zero3_offload", "fsdp2")


@dataclass(frozen=True)
class LaunchArgs:
    """The world of one job as `accelerate launch` needs it, seen from one node.

    num_machines: nodes in the job. machine_rank: this node's index, 0..num_machines-1.
    main_process_ip / main_process_port: where rank 0's rendezvous store listens.
    procs_per_node: worker processes started on every node (one per GPU).
    """

    num_machines: int
    machine_rank: int
    main_process_ip: str
    main_process_port: int
    procs_per_node: int

    def __post_init__(self) -> None:
        if self.num_machines < 1:
            raise UserError(f"the job has {self.num_machines} nodes; it needs at least 1")
        if not 0 <= self.machine_rank < self.num_machines:
            raise UserError(
                f"node rank {self.machine_rank} is outside 0..{self.num_machines - 1}: "
                "run one launcher task per node (srun --ntasks-per-node=1) over the whole job"
            )
        if self.procs_per_node < 1:
            raise UserError(f"processes per node must be >= 1, got {self.procs_per_node}")
        if not 1 <= self.main_process_port <= 65535:
            raise UserError(f"main process port {self.main_process_port} is not in 1..65535")

    @property
    def num_processes(self) -> int:
        """Total worker processes over all nodes (the world size)."""
        return self.num_machines * self.procs_per_node

    def accelerate_args(self) -> list[str]:
        """The `accelerate launch` options that describe this world."""
        return [
            "--num_machines",
            str(self.num_machines),
            "--machine_rank",
            str(self.machine_rank),
            "--main_process_ip",
            self.main_process_ip,
            "--main_process_port",
            str(self.main_process_port),
            "--num_processes",
            str(self.num_processes),
        ]


def expand_nodelist(nodelist: str) -> list[str]:
    """Expand a SLURM host list: `node[01-03,07],gpu5` -> node01 node02 node03 node07 gpu5.

    Zero padding follows the range's first bound; several bracket groups in one name expand to
    their product (`r[1-2]n[1-2]` -> r1n1 r1n2 r2n1 r2n2), in SLURM's order.
    """
    hosts: list[str] = []
    for item in _split_top_level(nodelist.strip(), ","):
        if not item:
            continue
        parts = re.split(r"(\[[^\]]*\])", item)
        choices: list[list[str]] = []
        for part in parts:
            if part.startswith("["):
                choices.append(_expand_brackets(part[1:-1], nodelist))
            elif "[" in part or "]" in part:
                raise UserError(f"malformed SLURM node list {nodelist!r}: unbalanced brackets")
            else:
                choices.append([part])
        hosts.extend("".join(combo) for combo in itertools.product(*choices))
    if not hosts:
        raise UserError(f"SLURM node list {nodelist!r} names no host")
    return hosts


def _expand_brackets(body: str, nodelist: str) -> list[str]:
    out: list[str] = []
    for rng in body.split(","):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", rng.strip())
        if match is None:
            raise UserError(f"malformed SLURM node list {nodelist!r}: cannot read range {rng!r}")
        lo, hi = match.group(1), match.group(2) or match.group(1)
        if int(hi) < int(lo):
            raise UserError(f"malformed SLURM node list {nodelist!r}: range {rng!r} runs backwards")
        out.extend(str(i).zfill(len(lo)) for i in range(int(lo), int(hi) + 1))
    return out


def _split_top_level(text: str, sep: str) -> list[str]:
    """Split on `sep` outside brackets, braces, parentheses and quotes."""
    items, depth, quote, current = [], 0, "", []
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == sep and depth == 0:
            items.append("".join(current))
            current = []
            continue
        current.append(ch)
    items.append("".join(current))
    return items


def procs_per_node_from_env(env: Mapping[str, str]) -> int | None:
    """GPUs SLURM gave this node (SLURM_GPUS_ON_NODE, else SLURM_GPUS_PER_NODE), or None.

    SLURM_GPUS_PER_NODE may name types: `4`, `a100:4`, `gpu:a100:4` or `a100:2,v100:2` (summed).
    """
    if env.get("SLURM_GPUS_ON_NODE", "").strip():
        return _positive_int(env["SLURM_GPUS_ON_NODE"], "SLURM_GPUS_ON_NODE")
    spec = env.get("SLURM_GPUS_PER_NODE", "").strip()
    if not spec:
        return None
    total = 0
    for part in spec.split(","):
        count = part.split("(")[0].rsplit(":", 1)[-1]
        total += _positive_int(count, "SLURM_GPUS_PER_NODE")
    return total


def _positive_int(value: str, name: str) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise UserError(f"{name}={value!r} is not a whole number") from None
    if number < 1:
        raise UserError(f"{name}={value!r} must be >= 1")
    return number


def _require(env: Mapping[str, str], *names: str) -> str:
    for name in names:
        if env.get(name, "").strip():
            return env[name].strip()
    raise UserError(
        f"{' / '.join(names)} is not set: run this inside a SLURM job step "
        "(sbatch + srun), or set it by hand"
    )


def derived_port(job_id: str) -> int:
    """A port every node of the job derives alike from its id, in [20000, 30000)."""
    digits = re.sub(r"\D", "", job_id)
    if not digits:
        raise UserError(f"SLURM_JOB_ID={job_id!r} holds no digits; set MASTER_PORT instead")
    return PORT_BASE + int(digits) % PORT_SPAN


def slurm_launch_args(
    env: Mapping[str, str],
    procs_per_node: int | None = None,
    hostnames: Callable[[str], list[str]] = expand_nodelist,
) -> LaunchArgs:
    """Compute this node's launch arguments from SLURM variables.

    Nodes: SLURM_JOB_NUM_NODES (else SLURM_NNODES). Rank: SLURM_NODEID. Main address:
    MASTER_ADDR, else the first host of SLURM_JOB_NODELIST (else SLURM_NODELIST) as `hostnames`
    expands it. Port: MASTER_PORT, else derived from SLURM_JOB_ID. Processes per node:
    `procs_per_node`, else the GPUs SLURM reports for the node.
    """
    num_machines = _positive_int(
        _require(env, "SLURM_JOB_NUM_NODES", "SLURM_NNODES"), "SLURM_JOB_NUM_NODES"
    )
    rank_text = _require(env, "SLURM_NODEID")
    if not rank_text.isdigit():
        raise UserError(f"SLURM_NODEID={rank_text!r} is not a whole number")
    if env.get("MASTER_ADDR", "").strip():
        main_ip = env["MASTER_ADDR"].strip()
    else:
        main_ip = hostnames(_require(env, "SLURM_JOB_NODELIST", "SLURM_NODELIST"))[0]
    if env.get("MASTER_PORT", "").strip():
        port = _positive_int(env["MASTER_PORT"], "MASTER_PORT")
    else:
        port = derived_port(_require(env, "SLURM_JOB_ID"))
    ppn = procs_per_node if procs_per_node is not None else procs_per_node_from_env(env)
    if ppn is None:
        raise UserError(
            "cannot tell how many processes to start per node: SLURM reports no GPUs "
            "(SLURM_GPUS_ON_NODE / SLURM_GPUS_PER_NODE); pass --procs-per-node N "
            "or set SFT_PROCS_PER_NODE"
        )
    return LaunchArgs(
        num_machines=num_machines,
        machine_rank=int(rank_text),
        main_process_ip=main_ip,
        main_process_port=port,
        procs_per_node=ppn,
    )


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
    return f"{root}/{experiment}/{_require(env, 'SLURM_JOB_ID')}"


def expand_sweep(overrides: Sequence[str]) -> list[list[str]]:
    """Hydra-style comma sweep: `a=1,2 b=x` -> [[a=1, b=x], [a=2, b=x]] (first key slowest).

    Commas inside brackets or quotes stay (`k=[1,2]` is one list value); Hydra's other sweep
    forms (range, choice, glob) are refused rather than misread.
    """
    axes: list[list[str]] = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"sweep override {item!r} has no '=': write key=value[,value...]")
        if re.match(r"^(range|choice|interval|glob|tag|sort|shuffle)\(", value):
            raise UserError(f"sweep override {item!r}: only comma lists are supported (a=1,2,3)")
        values = _split_top_level(value, ",")
        if any(v == "" for v in values):
            raise UserError(f"sweep override {item!r} has an empty value")
        axes.append([f"{key}={v}" for v in values])
    return [list(combo) for combo in itertools.product(*axes)]


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


def scontrol_hostnames(nodelist: str) -> list[str]:
    """Expand a node list with `scontrol show hostnames` when SLURM is installed, else in Python."""
    if shutil.which("scontrol"):
        try:
            out = subprocess.run(
                ["scontrol", "show", "hostnames", nodelist],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout.split()
            if out:
                return out
        except (subprocess.SubprocessError, OSError):
            pass
    return expand_nodelist(nodelist)


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
    return None if name == "single" else str(name)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _cmd_slurm_args(ns: argparse.Namespace, env: Mapping[str, str]) -> str:
    explicit = ns.procs_per_node or (
        _positive_int(env["SFT_PROCS_PER_NODE"], "SFT_PROCS_PER_NODE")
        if env.get("SFT_PROCS_PER_NODE", "").strip()
        else None
    )
    if explicit is None and procs_per_node_from_env(env) is None:
        explicit = _cuda_device_count() or None
    args = slurm_launch_args(env, explicit, hostnames=scontrol_hostnames)
    root = Path(ns.root)
    overrides = list(ns.overrides)
    distributed = override_value(overrides, "distributed")
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
