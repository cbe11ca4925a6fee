"""A SLURM job's world as `accelerate launch` needs it, from the job's variables alone.

    SLURM_JOB_NODELIST=gpu[01-04]  SLURM_NNODES=4  SLURM_NODEID=2  SLURM_JOB_ID=77
      -> num_machines 4, machine_rank 2, main address gpu01, port derived from the job id

Invariant: every node of a job computes the same world (node count, main address, port,
processes per node); only `machine_rank` (SLURM_NODEID) differs. Pure functions, except
`scontrol_hostnames`, which asks Slurm.
"""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sft.errors import UserError

PORT_BASE = 20000  # derived ports fall in [20000, 30000): below Linux's ephemeral range (32768+)
PORT_SPAN = 10000


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
    for item in split_top_level(nodelist.strip(), ","):
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


def split_top_level(text: str, sep: str) -> list[str]:
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
        return positive_int(env["SLURM_GPUS_ON_NODE"], "SLURM_GPUS_ON_NODE")
    spec = env.get("SLURM_GPUS_PER_NODE", "").strip()
    if not spec:
        return None
    total = 0
    for part in spec.split(","):
        count = part.split("(")[0].rsplit(":", 1)[-1]
        total += positive_int(count, "SLURM_GPUS_PER_NODE")
    return total


def positive_int(value: str, name: str) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise UserError(f"{name}={value!r} is not a whole number") from None
    if number < 1:
        raise UserError(f"{name}={value!r} must be >= 1")
    return number


def require(env: Mapping[str, str], *names: str) -> str:
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
    num_machines = positive_int(
        require(env, "SLURM_JOB_NUM_NODES", "SLURM_NNODES"), "SLURM_JOB_NUM_NODES"
    )
    rank_text = require(env, "SLURM_NODEID")
    if not rank_text.isdigit():
        raise UserError(f"SLURM_NODEID={rank_text!r} is not a whole number")
    if env.get("MASTER_ADDR", "").strip():
        main_ip = env["MASTER_ADDR"].strip()
    else:
        main_ip = hostnames(require(env, "SLURM_JOB_NODELIST", "SLURM_NODELIST"))[0]
    if env.get("MASTER_PORT", "").strip():
        port = positive_int(env["MASTER_PORT"], "MASTER_PORT")
    else:
        port = derived_port(require(env, "SLURM_JOB_ID"))
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
