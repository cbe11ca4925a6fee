"""benchmarks/bench_memory.py's measurement of one row: a real run whose peak is taken over the
steps after the first optimizer step (AdamW's states allocated), predicted from those steps'
micro-batches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "bench_memory.py"
TINY = ["model=tiny", "model.tiny_layers=1", "model.tiny_hidden_size=64", "data=demo",
        "data.demo_size=40", "data.max_length=1024", "collator=padding",
        "train.micro_batch_size=2"]  # fmt: skip


def test_one_row_measures_the_steps_after_the_first_optimizer_step():
    cmd = [sys.executable, str(SCRIPT), "--steps", "3", "--from-step", "2"]
    cmd += ["--child", json.dumps(TINY)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    assert row["measured_bytes"] > 0 and row["predicted_bytes"] > 0
    assert row["largest_micro_batch"]["rows"] == 2 and row["loss_impl"] in ("full", "chunked")
