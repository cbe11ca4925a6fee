"""The SLURM layer against a real Slurm on localhost: two emulated nodes, CPU only, gloo DDP.

Each test is bounded (pytest-timeout and every wait has its own deadline); together they take a
few minutes. Jobs run this checkout with this interpreter; run dirs go under pytest's tmp dir.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sft.checkpoint import is_valid

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SBATCH = str(ROOT / "launch" / "slurm" / "train.sbatch")
TINY = [
    "model=tiny",
    "data=demo",
    "data.demo_size=400",
    "data.max_bad_fraction=0.5",
    "train.micro_batch_size=2",
    "train.progress=false",
    "train.report_to=none",
]


def job_env(out_root: Path) -> dict[str, str]:
    """CPU nodes: DDP over gloo, one process per node, rendezvous on 127.0.0.1 (names don't resolve)."""
    return {
        "ACCELERATE_USE_CPU": "true",
        "SFT_PROCS_PER_NODE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "SFT_PYTHON": sys.executable,
        "SFT_OUTPUT_ROOT": str(out_root),
        "OMP_NUM_THREADS": "1",
    }


def losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "loss" in r]
    assert len(steps) == len(set(steps)), f"a step was logged twice: {steps}"
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def train_locally(run_dir: Path, overrides: list[str], timeout: float = 240) -> dict[int, float]:
    """The 1-process reference run, started directly (no launcher, no Slurm)."""
    env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}
    env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run(
        [sys.executable, "sft/train.py", *TINY, *overrides, f"run_dir={run_dir}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        env=env,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return losses(run_dir)


def tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else f"<no {path}>"


@pytest.mark.timeout(120)
def test_two_node_job_sees_both_ranks_and_agrees_on_the_world(slurm_cluster, tmp_path) -> None:
    script = tmp_path / "ranks.sbatch"
    script.write_text(
        "#!/bin/bash\n#SBATCH --nodes=2\n#SBATCH --ntasks-per-node=1\n"
        'srun bash -c \'echo "NODE $SLURM_NODEID $("$SFT_PYTHON" -m sft.launch slurm-args '
        "--args-only --procs-per-node 1)\"'\n"
    )
    out = tmp_path / "ranks.out"
    env = {k: v for k, v in job_env(tmp_path).items() if k != "MASTER_ADDR"}
    done = slurm_cluster.sbatch(["--wait", "-o", str(out), str(script)], env=env, timeout=90)
    assert done.returncode == 0, done.stderr + tail(out)
    by_node = {}
    for line in out.read_text().splitlines():
        if line.startswith("NODE "):
            _, node_id, *words = shlex.split(line)
            by_node[int(node_id)] = dict(zip(words[::2], words[1::2]))
    assert sorted(by_node) == [0, 1], out.read_text()
    for node_id, args in by_node.items():
        assert args["--machine_rank"] == str(node_id)
    shared = [{k: v for k, v in a.items() if k != "--machine_rank"} for a in by_node.values()]
    assert shared[0] == shared[1]
    assert shared[0]["--num_machines"] == "2" and shared[0]["--num_processes"] == "2"
    assert shared[0]["--main_process_ip"] == "n1"  # first host of n[1-2], via scontrol
    assert shared[0]["--config_file"] == "launch/accelerate/ddp.yaml"


@pytest.mark.timeout(300)
def test_two_node_ddp_matches_one_process(slurm_cluster, tmp_path) -> None:
    out = tmp_path / "train.out"
    overrides = [*TINY, "train.max_steps=6", "distributed=ddp", "train.grad_accum=1"]
    done = slurm_cluster.sbatch(
        ["--wait", "--nodes=2", "-o", str(out), SBATCH, *overrides],
        env=job_env(tmp_path),
        timeout=240,
    )
    assert done.returncode == 0, tail(out)
    job_id = done.stdout.strip().splitlines()[0]
    run_dir = tmp_path / "default" / job_id  # pinned to the job id
    assert (run_dir / "summary.json").is_file(), tail(out)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 6
    two_nodes = losses(run_dir)
    # same global batch (2 samples x 2 ranks) in one process: 2 samples x 2 accumulation steps
    one_proc = train_locally(tmp_path / "ref", ["train.max_steps=6", "train.grad_accum=2"])
    assert sorted(two_nodes) == list(range(1, 7))
    for step, loss in one_proc.items():
        assert abs(two_nodes[step] - loss) < 1e-5, (step, two_nodes[step], loss)


@pytest.mark.timeout(420)
def test_sigterm_checkpoints_requeues_and_resumes_to_the_same_loss(slurm_cluster, tmp_path) -> None:
    steps = 60  # long enough that the signal lands mid-run even on a fast, idle machine
    out = tmp_path / "train.out"
    overrides = [*TINY, f"train.max_steps={steps}", "distributed=ddp", "train.grad_accum=1"]
    done = slurm_cluster.sbatch(
        ["--nodes=2", "-o", str(out), SBATCH, *overrides], env=job_env(tmp_path)
    )
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    run_dir = tmp_path / "default" / job_id
    metrics = run_dir / "metrics.jsonl"

    deadline = time.monotonic() + 180
    polls = 0
    while not (metrics.exists() and metrics.read_text().strip()):
        assert time.monotonic() < deadline, "no training step within 180 s:\n" + tail(out)
        polls += 1
        if polls % 40 == 0:  # every ~2 s: a job that died before its first step fails fast
            assert slurm_cluster.job(job_id).get("JobState") in ("PENDING", "RUNNING"), tail(out)
        time.sleep(0.05)
    slurm_cluster.run(["scancel", "--signal=TERM", job_id])

    # The batch script saw exit 75 and ran `scontrol requeue`; Slurm holds the job ~2 min.
    job = slurm_cluster.wait_state(job_id, ("PENDING",), 180, reason="BeginTime")
    assert job["Restarts"] == "1"
    checkpoints = sorted((run_dir / "checkpoints").glob("step-*"))
    assert len(checkpoints) == 1, tail(out)
    saved_at = int(checkpoints[0].name.split("-")[1])
    assert 1 <= saved_at < steps, f"pre-emption checkpoint at step {saved_at}"
    assert (checkpoints[0] / "manifest.json").is_file()
    assert is_valid(checkpoints[0])
    assert max(losses(run_dir)) == saved_at  # stopped at the step boundary it saved

    # slurmd refuses a launch credential issued in the same second as the requeue revoked the
    # old one ("Job credential revoked"): let a few seconds pass before releasing the hold.
    time.sleep(3)
    slurm_cluster.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"])
    job = slurm_cluster.wait_state(job_id, ("COMPLETED", "FAILED", "CANCELLED"), 240)
    assert job["JobState"] == "COMPLETED", tail(out)
    log = out.read_text()
    assert "resumed from" in log and f"at step {saved_at}" in log, tail(out)

    resumed = losses(run_dir)
    assert sorted(resumed) == list(range(1, steps + 1))
    uninterrupted = train_locally(
        tmp_path / "ref", [f"train.max_steps={steps}", "train.grad_accum=2"]
    )
    for step, loss in uninterrupted.items():
        assert abs(resumed[step] - loss) < 1e-5, (step, resumed[step], loss)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["exit_code"] == 0
    assert abs(summary["final_loss"] - uninterrupted[steps]) < 1e-5


@pytest.mark.timeout(300)
def test_sweep_submits_one_job_per_value_and_both_finish(slurm_cluster, tmp_path) -> None:
    done = slurm_cluster.run(
        [
            "bash",
            str(ROOT / "launch" / "slurm" / "sweep.sh"),
            "--nodes=1",
            f"--output={tmp_path}/%x-%j.out",
            "--",
            "collator=padding,packing",
            *TINY,
            "train.max_steps=3",
        ],
        env=job_env(tmp_path),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    submitted = [line.split(" ", 1) for line in done.stdout.strip().splitlines()]
    assert [words.split()[0] for _, words in submitted] == ["collator=padding", "collator=packing"]
    job_ids = [job_id for job_id, _ in submitted]
    assert len(set(job_ids)) == 2
    for job_id, words in submitted:
        job = slurm_cluster.wait_state(job_id, ("COMPLETED", "FAILED", "CANCELLED"), 240)
        assert job["JobState"] == "COMPLETED", tail(tmp_path / f"sft-{job_id}.out")
        summary = json.loads((tmp_path / "default" / job_id / "summary.json").read_text())
        assert summary["collator"] == words.split()[0].split("=")[1]
        assert summary["steps"] == 3 and summary["exit_code"] == 0


def _hydra_sweep(slurm_cluster, sweep_dir: Path, overrides: list[str], env: dict):
    """`sft-train -m hydra/launcher=slurm ...` (configs/hydra/launcher/slurm.yaml) from here."""
    return slurm_cluster.run(
        [sys.executable, "sft/train.py", "-m", "hydra/launcher=slurm",
         "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=10",
         f"hydra.sweep.dir={sweep_dir}", *TINY, "train.max_steps=3", *overrides],
        env=env, timeout=400, check=False,
    )  # fmt: skip


@pytest.mark.timeout(900)
def test_hydra_submitit_sweep_runs_every_job_on_slurm_and_reports_exit_codes(
    slurm_cluster, tmp_path
) -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the slurm extra")
    env = {**job_env(tmp_path)}
    env.pop("ACCELERATE_USE_CPU")  # one plain process per job: no accelerate launcher
    sweep = tmp_path / "sweep"
    done = _hydra_sweep(slurm_cluster, sweep, ["collator=padding,packing"], env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "sweep: 2 job(s), 0 failed" in done.stdout
    for n, collator in enumerate(["padding", "packing"]):
        (job_dir,) = sweep.glob(f"{n}-*")
        summary = json.loads((job_dir / "summary.json").read_text())
        assert summary["collator"] == collator and summary["exit_code"] == 0
        assert summary["steps"] == 3
    assert list((sweep / ".submitit").iterdir()), "submitit's job folders live in the sweep dir"
    # one job fails at run time (no sample fits 4 tokens): the sweep says so and exits non-zero
    sweep = tmp_path / "sweep-fail"
    done = _hydra_sweep(slurm_cluster, sweep, ["collator=padding", "data.max_length=4,1280"], env)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-3000:]
    assert "sweep: 2 job(s), 1 failed" in done.stdout
    assert [(d / "exit_code").read_text() for d in sorted(sweep.glob("[01]-*"))] == ["2\n", "0\n"]
