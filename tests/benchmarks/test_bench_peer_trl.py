"""benchmarks/bench_peer_trl.py's dry run end to end: our trainer and TRL's SFTTrainer on the same
tokens (tiny model, 4 FLAN-CoT samples, 3 steps), one JSON record of the expected shape."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "bench_peer_trl.py"
SETUPS = ["ours_padding", "trl_padding", "ours_packing", "trl_packing"]


@pytest.mark.slow
def test_dry_run_trains_the_same_micro_batches_on_both_sides(tmp_path, shared_data):
    try:
        import trl
    except ImportError as e:
        pytest.skip(f"trl is not importable ({e}); it comes with pip install -e .[dev]")
    if not (shared_data / "flan_cot" / "flan_cot_messages.jsonl").is_file():
        pytest.skip(f"FLAN-CoT not found under {shared_data}/flan_cot")
    out = tmp_path / "peer.json"
    cmd = [sys.executable, str(SCRIPT), "--dry-run", "--json", str(out)]
    cmd += ["--markdown", str(tmp_path / "peer.md")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record["versions"]["trl"] and record["versions"]["torch"]
    assert record["settings"]["model"] == "tiny" and record["settings"]["train_samples"] == 4
    runs = {r["setup"]: r for r in record["runs"]}
    assert sorted(runs) == sorted(SETUPS)
    for name, run in runs.items():
        assert run["measured"]["real_tokens_per_s"] > 0, name
        assert 0 < run["measured"]["mfu"] < 1, name  # model FLOPs / s over the measured GEMM peak
        assert run["peak_rss_mb"] > 0 and len(run["steps"]) == 3, name
        assert math.isfinite(run["step1_loss"]), name
    ours, trl = runs["ours_padding"]["steps"], runs["trl_padding"]["steps"]
    assert [s["real_tokens"] for s in ours] == [s["real_tokens"] for s in trl]
    assert [s["supervised_tokens"] for s in ours] == [s["supervised_tokens"] for s in trl]
    assert [s["samples"] for s in ours] == [s["samples"] for s in trl]  # same order, same tokens
    padding = record["checks"]["padding"]
    assert padding["losses_comparable"] and all(padding["trl_denominator_is_our_supervised_tokens"])
    # same weights, same micro-batch, same token-mean loss: the first losses agree
    assert padding["step1_loss_abs_diff"] < 1e-4
    assert {"padding", "packing"} <= set(record["ratios"])
    assert record["ratios"]["padding"]["median"] > 0
    assert "| ours_padding |" in (tmp_path / "peer.md").read_text()
