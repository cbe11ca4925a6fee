"""benchmarks/paper_grid.sh: every job runs once, a rerun resumes, finished runs are kept and
not run again on a new machine.

The trainer is replaced by a fake (PY=...) that writes what a finished run writes, so the test
checks the script's bookkeeping (claims, skips, exit code, KEEP copies), not training.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "paper_grid.sh"

FAKE = """#!{python}
import json, sys
from pathlib import Path
args = dict(a.split("=", 1) for a in sys.argv[2:] if "=" in a)
with open({calls!r}, "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
run = Path(args["run_dir"])
run.mkdir(parents=True, exist_ok=True)
if args.get("collator.group_mode") == "apart" and args.get("seed") == "1":
    sys.exit(3)  # one job fails
(run / "config.yaml").write_text("seed: " + args["seed"] + "\\n")
(run / "metrics.jsonl").write_text(json.dumps({{"step": 1, "loss": 1.0}}) + "\\n")
(run / "model.safetensors").write_text("weights")  # must not be kept
(run / "summary.json").write_text(json.dumps({{"run_name": args["run_name"]}}))
"""


def _grid(tmp_path, *experiments):
    env = dict(
        os.environ,
        PY=str(tmp_path / "fake.py"),
        OUT=str(tmp_path / "out"),
        KEEP=str(tmp_path / "keep"),
        SEEDS="0 1",
        CORES="0",
    )
    return subprocess.run(
        ["bash", str(SCRIPT), *experiments],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.skipif(sys.platform != "linux", reason="taskset (util-linux) pins the jobs")
def test_every_job_once_rerun_resumes_and_finished_runs_are_kept(tmp_path):
    calls = tmp_path / "calls.jsonl"
    fake = tmp_path / "fake.py"
    fake.write_text(FAKE.format(python=sys.executable, calls=str(calls)))
    fake.chmod(0o755)

    first = _grid(tmp_path, "grouping")
    assert first.returncode == 1, first.stderr  # the failing job makes the grid fail
    assert "grouping/packing_apart-seed1 FAILED" in first.stderr
    runs = [json.loads(line) for line in calls.read_text().splitlines()]
    assert len(runs) == 4 and all(r[:2] == ["sft/train.py", "experiment=paper_small"] for r in runs)
    together = [r for r in runs if "collator.group_mode=together" in r]
    assert len(together) == 2 and {"seed=0", "seed=1"} <= {a for r in together for a in r}
    keep = tmp_path / "keep" / "grouping"
    assert sorted(p.name for p in keep.iterdir()) == [
        "packing_apart-seed0",
        "packing_together-seed0",
        "packing_together-seed1",
    ]
    kept = sorted(p.name for p in (keep / "packing_together-seed1").iterdir())
    assert kept == ["config.yaml", "metrics.jsonl", "summary.json"]  # no weights
    assert not list((tmp_path / "out" / "grouping").glob("*.claim"))

    second = _grid(tmp_path, "grouping")  # only the failed job runs again
    assert second.returncode == 1
    again = [json.loads(line) for line in calls.read_text().splitlines()][4:]
    assert len(again) == 1 and "collator.group_mode=apart" in again[0] and "seed=1" in again[0]

    shutil.rmtree(tmp_path / "out")  # a new machine: only the kept runs are left
    third = _grid(tmp_path, "grouping")
    assert third.returncode == 1  # the failed job ran again, nothing kept did
    assert len(calls.read_text().splitlines()) == 6

    assert _grid(tmp_path, "nonsense").returncode == 2


@pytest.mark.skipif(sys.platform != "linux", reason="taskset (util-linux) pins the jobs")
def test_a_stop_file_lets_the_running_job_finish_and_starts_no_other(tmp_path):
    calls = tmp_path / "calls.jsonl"
    fake = tmp_path / "fake.py"
    stop = tmp_path / "out" / "STOP"
    body = FAKE.format(python=sys.executable, calls=str(calls))
    body += f"Path({str(stop)!r}).touch()  # the user stops the grid while this job runs\n"
    fake.write_text(body)
    fake.chmod(0o755)

    first = _grid(tmp_path, "turns")  # 4 jobs on one core
    assert first.returncode == 0, first.stderr
    assert "stopped" in first.stdout and len(calls.read_text().splitlines()) == 1
    assert len(list((tmp_path / "keep" / "turns").iterdir())) == 1  # the running job was kept

    second = _grid(tmp_path, "turns")  # a rerun removes STOP and goes on with the next job
    assert second.returncode == 0, second.stderr
    assert len(calls.read_text().splitlines()) == 2
    assert len(list((tmp_path / "keep" / "turns").iterdir())) == 2
