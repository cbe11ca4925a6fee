"""benchmarks/bench_attention.py's dry run end to end: real demo packs through the per-sample
baseline and the bucketed kernel, checked equal, one JSON record of the expected shape."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "bench_attention.py"


def test_dry_run_compares_both_kernels_and_writes_the_record(tmp_path):
    out = tmp_path / "attention.json"
    cmd = [sys.executable, str(SCRIPT), "--dry-run", "--threads", "1", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record["data"] == "demo" and record["samples"] > 0 and record["layers"] == 2
    assert 0 <= record["max_relative_difference"] <= 1e-5  # the equality check ran and held
    (rnd,) = record["rounds"]
    assert rnd["per_sample"] > 0 and rnd["bucketed"] > 0
    assert rnd["ratio"] == rnd["per_sample"] / rnd["bucketed"] == record["ratio_median"]
    assert record["machine"]["load_before"] >= 0 and record["machine"]["load_after"] >= 0
