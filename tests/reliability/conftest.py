"""Helpers for the reliability tests: run the real training script, kill it, read what it wrote.

Every run is a subprocess of `sft/train.py` (or `accelerate launch` of it for 2 processes) on the
tiny model and a small slice of the demo data, so a run takes seconds on 2 CPU cores. Processes
are only ever signalled by PID: the launcher we started and the workers whose arguments name the
run's own (unique, temporary) run dir.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TRAIN = str(ROOT / "sft" / "train.py")
FAULT_TRAIN = str(ROOT / "tests" / "reliability" / "fault_train.py")  # sft/train.py + fault hooks

# 24 demo rows, rows longer than 512 tokens dropped by policy -> a few steps per epoch
TINY = [
    "model=tiny",
    "data=demo",
    "data.demo_size=24",
    "data.max_length=512",
    "data.overlong=drop",
    "data.val_fraction=0",
    "train.micro_batch_size=2",
    "train.progress=false",
    "train.report_to=none",
    "optim.lr=1e-3",
    "optim.warmup_ratio=0",
    "train.record_samples=true",
]
SINGLE = [*TINY, "model.dropout=0.1", "train.max_steps=10", "train.save_every=4"]  # 1 process
MULTI = [*TINY, "model.dropout=0.1", "train.max_steps=6", "train.save_every=3"]  # 2 processes


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


def env_for(extra: dict | None = None) -> dict:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
        "HYDRA_FULL_ERROR": "1",
    }
    env.pop("SFT_TEST_FAULT", None)
    env.update(extra or {})
    return env


def launcher(processes: int, engine: str = "ddp", faults: bool = False) -> list[str]:
    """The command prefix: the script itself for 1 process, `accelerate launch` on CPU otherwise;
    with `faults`, the script that runs the trainer with the tests' fault hooks."""
    script = FAULT_TRAIN if faults else TRAIN
    if processes == 1:
        return [sys.executable, script]
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(ROOT / "launch" / "accelerate" / f"{engine}.yaml"),
        "--num_processes",
        str(processes),
        "--main_process_port",
        str(_free_port()),
        script,
        f"distributed={engine}",
    ]


def _launch_env(processes: int, engine: str, env: dict | None) -> dict:
    """DDP on CPU needs ACCELERATE_USE_CPU=true; for DeepSpeed it must stay unset (Accelerate would
    drop DeepSpeed), DeepSpeed finds the CPU itself."""
    base = {"ACCELERATE_USE_CPU": "true"} if processes > 1 and engine == "ddp" else {}
    return {**base, **(env or {})}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_train(
    run_dir: Path,
    *overrides: str,
    processes: int = 1,
    engine: str = "ddp",
    env: dict | None = None,
    timeout: float = 300,
) -> Run:
    faults = "SFT_TEST_FAULT" in (env or {})
    cmd = launcher(processes, engine, faults) + [*overrides, f"run_dir={run_dir}"]
    extra = _launch_env(processes, engine, env)
    try:
        p = subprocess.run(
            cmd,
            cwd=ROOT,
            env=env_for(extra),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        for pid in run_processes(
            run_dir
        ):  # the launcher is gone; its workers must not outlive the test
            os.kill(pid, signal.SIGKILL)
        raise
    return Run(p.returncode, p.stdout, p.stderr)


def start_train(
    run_dir: Path, *overrides: str, processes: int = 1, engine: str = "ddp", env: dict | None = None
) -> subprocess.Popen:
    """Start a run in its own session; its output goes to <run_dir>.out / .err beside the run dir."""
    faults = "SFT_TEST_FAULT" in (env or {})
    cmd = launcher(processes, engine, faults) + [*overrides, f"run_dir={run_dir}"]
    extra = _launch_env(processes, engine, env)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{run_dir}.out", "w") as out, open(f"{run_dir}.err", "w") as err:
        return subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env_for(extra),
            stdout=out,
            stderr=err,
            text=True,
            start_new_session=True,
        )


def output(run_dir: Path) -> tuple[str, str]:
    return Path(f"{run_dir}.out").read_text(), Path(f"{run_dir}.err").read_text()


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    """Poll until `path` exists; fail if the run ends first."""
    end = time.time() + timeout
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"run ended (rc={proc.returncode}) before {path} appeared: {proc.args[-1]}")
        if time.time() > end:
            proc.kill()
            pytest.fail(f"{path} did not appear within {timeout}s")
        time.sleep(0.02)


def run_processes(run_dir: Path, prefix: bool = False) -> list[int]:
    """PIDs of live processes whose command line names this (unique) run dir: launcher and workers
    (with `prefix`, any run dir under that folder).

    torch elastic starts every worker in a session of its own, so the launcher's process group
    does not reach them; the run dir in their arguments does.
    """
    needle = f"run_dir={run_dir}".encode()
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                args = (d / "cmdline").read_bytes().split(b"\0")
                hit = any(a.startswith(needle) for a in args) if prefix else needle in args
                if hit and (d / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    found.append(int(d.name))
            except (OSError, IndexError):
                pass
    return found


@pytest.fixture(autouse=True)
def _no_run_outlives_its_test(tmp_path):
    """Whatever a test started under its tmp_path is SIGKILLed when the test ends (pass or fail)."""
    yield
    for pid in run_processes(tmp_path, prefix=True):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def kill_run(proc: subprocess.Popen, run_dir: Path) -> None:
    """SIGKILL the launcher and every worker of this run at once (a node dying), then reap."""
    for pid in run_processes(run_dir):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=60)
    end = time.time() + 30
    while run_processes(run_dir) and time.time() < end:
        time.sleep(0.1)


def rows(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def losses(run_dir: Path) -> dict[int, float]:
    """step -> loss; fails if a step was logged twice (the one-line-per-step contract)."""
    train_rows = [r for r in rows(run_dir) if "loss" in r]
    steps = [r["step"] for r in train_rows]
    assert len(steps) == len(set(steps)), f"a step was logged twice in {run_dir}: {steps}"
    return {r["step"]: r["loss"] for r in train_rows}


def samples(run_dir: Path, rank: int = 0) -> list[dict]:
    path = run_dir / "samples" / f"rank{rank}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def final_weights(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "final" / "model.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    import torch

    wa, wb = final_weights(a), final_weights(b)
    assert wa.keys() == wb.keys()
    diff = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not diff, f"final weights differ in {len(diff)} tensors, e.g. {diff[:3]}"


def assert_same_run(ref: Path, got: Path, ranks: int = 1) -> None:
    """Bit-identical losses per step, the same samples per step and identical final weights."""
    lr, lg = losses(ref), losses(got)
    assert sorted(lg) == sorted(lr), f"steps differ: {sorted(lr)} vs {sorted(lg)}"
    bad = {s: (lr[s], lg[s]) for s in lr if lr[s] != lg[s]}
    assert not bad, f"losses differ at steps {bad}"
    for r in range(ranks):
        assert samples(got, r) == samples(ref, r), f"rank {r} saw different samples per step"
    assert_same_weights(ref, got)


def checkpoint_steps(run_dir: Path) -> list[int]:
    root = run_dir / "checkpoints"
    return sorted(int(p.name[5:]) for p in root.glob("step-*")) if root.exists() else []


def reference(
    tmp_path_factory, name: str, args: list[str], processes: int = 1, engine: str = "ddp"
) -> Path:
    """An uninterrupted run of `args` in a fresh directory."""
    d = tmp_path_factory.mktemp(name) / "run"
    r = run_train(d, *args, processes=processes, engine=engine)
    assert r.returncode == 0, r.stderr[-3000:]
    return d


@pytest.fixture(scope="session")
def single_reference(tmp_path_factory) -> Path:
    """Uninterrupted 1-process padding run of SINGLE (shared by resume and pre-emption tests)."""
    return reference(tmp_path_factory, "single-ref", SINGLE)


@pytest.fixture(scope="session")
def ddp_reference(tmp_path_factory) -> Path:
    """Uninterrupted 2-process DDP run of MULTI (shared by resume and pre-emption tests)."""
    return reference(tmp_path_factory, "ddp-ref", MULTI, processes=2)
