"""benchmarks/bench_train.py end to end on the tiny model, and its MFU (benchmarks/train_mfu.py):
the measured steps re-planned exactly, model FLOPs by hand, a record from another CPU refused."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "bench_train.py"


def test_model_flops_by_hand_with_and_without_recomputation():
    from benchmarks.train_mfu import model_flops
    from sft.plan_memory import resolve_shape

    tiny = resolve_shape("tiny", 64, 2)
    body = tiny.num_params() - tiny.embedding_params() - tiny.lm_head_params()
    head = tiny.vocab_size * tiny.hidden_size
    layers = 6 * body * 8 + 6 * tiny.num_layers * tiny.q_dim * (3 * 3 + 5 * 5)
    assert model_flops(tiny, [3, 5], 2, False) == pytest.approx(layers + 6 * head * 2)
    assert model_flops(tiny, [3, 5], 2, True) == pytest.approx(layers * 8 / 6 + 6 * head * 2)


@pytest.mark.slow
def test_tiny_run_records_mfu_of_the_replanned_steps(tmp_path):
    out = tmp_path / "train.json"
    cmd = [sys.executable, str(SCRIPT), "--model", "tiny", "--datasets", "demo"]
    cmd += ["--setups", "padding,packing_varlen", "--steps", "3", "--warmup", "1"]
    cmd += ["--max-load", "1000", "--wait-max", "0", "--wait-each", "0", "--json", str(out)]
    cmd += ["--extra", "data.demo_size=200", "data.max_bad_fraction=0.5"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads(out.read_text())
    peak = record["gemm_peak_flops"]
    assert peak == max(record["gemm_peak_flops_measured"]) > 0
    setups = record["datasets"]["demo"]["setups"]
    for name, m in setups.items():
        assert 0 < m["mfu"] < 1, name
        assert math.isclose(m["mfu"], m["model_flops"] / m["wall_s"] / peak), name
    # same machine: --add-mfu recomputes it (the re-planned steps still hold the logged tokens)
    again = [sys.executable, str(SCRIPT), "--add-mfu", str(out)]
    proc = subprocess.run(again, cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    redone = json.loads(out.read_text())["datasets"]["demo"]["setups"]
    for name, m in setups.items():
        assert redone[name]["model_flops"] == m["model_flops"], name
    # another machine's record: refused in one line, nothing written
    record["machine"]["cpu"] = "another CPU"
    out.write_text(json.dumps(record))
    proc = subprocess.run(again, cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 1 and "rerun the benchmark here" in proc.stderr
    assert json.loads(out.read_text())["machine"]["cpu"] == "another CPU"
    # steps that are not what the plan gives (here: one token more than logged): no MFU
    from benchmarks.train_mfu import add_mfu

    record["datasets"]["demo"]["setups"]["padding"]["real_tokens"] += 1
    with pytest.raises(RuntimeError, match="not the same samples"):
        add_mfu(record, 1e9)
