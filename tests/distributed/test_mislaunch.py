"""Launch mistakes are refused at start-up with one line and exit code 2, before any model loads.

A process started directly exits 2 itself; under `accelerate launch` (torchrun) the workers print
the same single line and exit 2 (torchrun stops the slower ranks with SIGTERM once the first one
exits), as the launcher's failure summary shows.
"""

from __future__ import annotations

import re
import sys

import pytest

from tests.distributed.launching import TRAIN, accelerate_cmd, clean_env, run

pytestmark = [pytest.mark.distributed, pytest.mark.slow]
QUICK = [
    "model=tiny",
    "data=demo",
    "data.demo_size=50",
    "train.max_steps=1",
    "train.progress=false",
    "train.report_to=none",
]


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def _refused_directly(overrides: list[str], tmp_path) -> str:
    proc = run([sys.executable, TRAIN, *QUICK, *overrides, f"run_dir={tmp_path}"], timeout=180)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = _error_lines(proc.stderr)
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "metrics.jsonl").exists()
    return lines[0]


def _refused_by_the_workers(cmd: list[str], env: dict[str, str], tmp_path) -> str:
    proc = run(cmd + [*QUICK, f"run_dir={tmp_path}"], env=env, timeout=300)
    assert proc.returncode != 0
    lines = _error_lines(proc.stderr)
    # every rank that got to speak before torchrun stopped the others said the same single line
    assert 1 <= len(lines) <= 2 and len(set(lines)) == 1, proc.stderr[-3000:]
    # torchrun's failure summary: each rank exited 2, or was stopped (SIGTERM) after another one did
    codes = re.findall(r"^\s*exitcode\s+: (-?\d+)", proc.stderr, flags=re.MULTILINE)
    assert "2" in codes and set(codes) <= {"2", "-15"}, proc.stderr[-3000:]
    assert not (tmp_path / "metrics.jsonl").exists()
    return lines[0]


def test_two_process_ddp_config_launched_as_one_process(tmp_path):
    line = _refused_directly(["distributed=ddp", "distributed.expect_processes=2"], tmp_path)
    assert (
        "distributed=ddp" in line
        and "NO with 1 process(es)" in line
        and "launch/accelerate/ddp.yaml" in line
    )


def test_zero3_launched_without_deepspeed(tmp_path):
    line = _refused_directly(["distributed=zero3"], tmp_path)
    assert "distributed=zero3 expects deepspeed" in line and "launch/accelerate/zero3.yaml" in line


def test_zero3_yaml_with_accelerate_use_cpu(tmp_path):
    # ACCELERATE_USE_CPU=true makes Accelerate drop DeepSpeed: 2 plain gloo ranks, no sharding
    cmd = accelerate_cmd("zero3", 2)
    line = _refused_by_the_workers(
        cmd + ["distributed=zero3"], clean_env(ACCELERATE_USE_CPU="true"), tmp_path
    )
    assert "MULTI_CPU with 2 process(es)" in line and "ACCELERATE_USE_CPU" in line


def test_fsdp2_on_cpu(tmp_path):
    # Accelerate keeps its FSDP plugin only for GPU-like devices; on CPU the ranks would run unsharded
    cmd = accelerate_cmd("fsdp2", 2)
    line = _refused_by_the_workers(
        cmd + ["distributed=fsdp2"], clean_env(ACCELERATE_USE_CPU="true"), tmp_path
    )
    assert "fsdp2 needs CUDA GPUs" in line
