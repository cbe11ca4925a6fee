"""Launching the trainer as several processes from a test: commands, environment, results.

Each launch gets a fresh rendezvous port and an environment without inherited launcher variables,
so a test never meets another job's ranks.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ACCELERATE = ROOT / "launch" / "accelerate"
TRAIN = str(ROOT / "sft" / "train.py")
# a few fp32 steps of the tiny model on 200 demo conversations (byte-level tokens, so rows whose
# prompt alone exceeds 512 bytes are skipped as bad rows: allowed up to half of them), evaluated
# after step 3 on 10 held-out samples in micro-batches of 4 (3 of them: uneven over 2 ranks)
COMMON = [
    "model=tiny",
    "data=demo",
    "data.demo_size=200",
    "data.max_length=512",
    "data.max_bad_fraction=0.5",
    "data.val_fraction=0.05",
    "train.eval_every=3",
    "train.eval_micro_batch_size=4",
    "model.dtype=fp32",
    "train.max_steps=3",
    "train.progress=false",
    "train.report_to=none",
    "optim.warmup_ratio=0",
    "optim.lr=1e-3",
]
LAUNCH_TIMEOUT = 420  # DeepSpeed JIT-compiles one CPU op (~50 s) on its very first run
_SCRUB = (
    "ACCELERATE_",
    "WORLD_SIZE",
    "RANK",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TORCHELASTIC_",
    "SLURM_",
    "OMP_NUM_THREADS",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without launcher/rank variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB)}
    env.update(
        {
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONWARNINGS": "ignore::FutureWarning",
        }
    )
    env.update(extra)
    return env


def accelerate_cmd(config: str, num_processes: int, script: str = TRAIN) -> list[str]:
    """`accelerate launch` with a shipped launch/accelerate/<config>.yaml on this machine."""
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(ACCELERATE / f"{config}.yaml"),
        "--num_processes",
        str(num_processes),
    ]
    if num_processes > 1:
        cmd += [
            "--num_machines",
            "1",
            "--machine_rank",
            "0",
            "--main_process_ip",
            "127.0.0.1",
            "--main_process_port",
            str(free_port()),
        ]
    return cmd + [script]


def run(
    cmd: list[str], env: dict[str, str] | None = None, timeout: int = LAUNCH_TIMEOUT
) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd,
        cwd=ROOT,
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def losses(run_dir: Path, key: str = "loss") -> list[float]:
    """The values of `key` (loss, eval_loss) in the order metrics.jsonl logged them."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r[key] for r in rows if key in r]


def check_ok(proc: subprocess.CompletedProcess, what: str) -> None:
    """Fail with the part of stderr that explains it: a worker's fatal error if any, else the tail."""
    if proc.returncode == 0:
        return
    fatal = proc.stderr.find("Fatal Python error")
    shown = proc.stderr[fatal : fatal + 6000] if fatal >= 0 else proc.stderr[-4000:]
    raise AssertionError(f"{what} failed (exit {proc.returncode}):\n{shown}")


def two_process_overrides(
    model_dir: Path, distributed: str, collator: str, run_dir: Path
) -> list[str]:
    return [
        *COMMON,
        f"model.name_or_path={model_dir}",
        f"collator={collator}",
        f"distributed={distributed}",
        "distributed.expect_processes=2",
        "train.micro_batch_size=2",
        "train.grad_accum=1",
        f"run_dir={run_dir}",
    ]
