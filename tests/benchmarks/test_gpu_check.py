"""benchmarks/gpu_check.py, the GPU run prepared: its FLOPs count, budget, wheel install, and the
whole pipeline's dry run on CPU (every part, one JSON of the expected shape)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"


@pytest.fixture(scope="module")
def gc():
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("gpu_check")
    finally:
        sys.path.remove(str(BENCH))


def test_step_flops_by_hand(gc):
    shape = {
        "non_embedding_params": 1000,
        "num_layers": 2,
        "num_heads": 4,
        "head_dim": 8,
        "hidden_size": 16,
        "vocab_size": 100,
    }
    # two samples of 3 and 5 tokens padded to 5: pairs 6 + 15 inside them, 2 x 15 over the rows
    kw = {"real": 8, "positions": 10, "pairs": 21.0, "computed_pairs": 30.0, "targets": 4}
    needed, computed = gc.step_flops(shape, **kw, gc=False, chunked=False)
    attn = 12 * 2 * 4 * 8
    head = 6 * 16 * 100 * 4
    assert needed == 6 * 1000 * 8 + attn * 21 + head
    assert computed == 6 * 1000 * 10 + attn * 30 + head
    again, _ = gc.step_flops(shape, **kw, gc=True, chunked=True)  # recomputation counted
    assert again == 8 * 1000 * 8 + 16 * 2 * 4 * 8 * 21 + 8 * 16 * 100 * 4


def test_a_part_that_does_not_fit_is_skipped_for_budget(gc, tmp_path):
    args = SimpleNamespace(dry_run=True, budget=1.0)
    check = gc.Check(args, gc.DRY, tmp_path)
    res = check.part("bench:x", 60, lambda t: pytest.fail("must not run"), min_s=10)
    assert res["status"] == "skipped" and res["reason"] == "budget"
    check.part("bench:y", 60, lambda t: {}, skip=("skipped", "needs CUDA"))
    record = json.loads((tmp_path / "gpu_check.json").read_text())
    assert record["steps"] == {"bench:x": "skipped: budget", "bench:y": "skipped: needs CUDA"}
    assert record["ok"] is True


def test_wheels_unzip_where_pip_cannot_install(gc, tmp_path, monkeypatch):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "carried_probe-1.0-py3-none-any.whl", "w") as z:
        z.writestr("carried_probe/__init__.py", "VALUE = 42\n")
    wheels_mod = sys.modules["gpu_wheels"]
    failed = SimpleNamespace(returncode=1, stderr="No module named pip\n")
    monkeypatch.setattr(wheels_mod.subprocess, "run", lambda *a, **k: failed)
    monkeypatch.setattr(sys, "path", list(sys.path))
    res = gc.install_wheels(wheels, tmp_path / "site", "always", timeout=10)
    assert res["status"] == "passed" and res["installed_by"] == "zipfile"
    assert (tmp_path / "site" / "carried_probe" / "__init__.py").exists()
    assert sys.path[0] == str(tmp_path / "site")


@pytest.mark.slow
def test_dry_run_runs_every_part_and_writes_one_json(tmp_path):
    setups = "packing_varlen,padding_sdpa,loss_full,loss_chunked,packing_flex"
    cmd = [sys.executable, str(BENCH / "gpu_check.py"), "--dry-run", "--out", str(tmp_path)]
    proc = subprocess.run(
        [*cmd, "--setups", setups], check=False, cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads((tmp_path / "gpu_check.json").read_text())
    assert record["dry_run"] is True and record["ok"] is True and record["failed"] == []
    assert record["simulated_missing_modules"] == ["datasets", "deepspeed", "flash_attn", "gguf"]
    assert record["device"]["cuda"] is False and record["versions"]["torch"]
    steps = record["steps"]
    assert list(steps) == [
        "wheels",
        "environment",
        "matmul",
        "gpu_tests",
        *[f"bench:{s}" for s in setups.split(",")],
    ]
    assert steps["wheels"] == "passed" or steps["wheels"].startswith("skipped: no wheels")
    assert steps["environment"] == steps["matmul"] == "passed"
    assert steps["gpu_tests"].startswith("skipped: ") and "CUDA" in steps["gpu_tests"]
    assert (tmp_path / "gpu_tests.xml").exists()
    assert steps["bench:packing_flex"] == "skipped: needs CUDA"
    for name in ("packing_varlen", "padding_sdpa"):
        assert steps[f"bench:{name}"] == "passed"
    for name in ("loss_full", "loss_chunked"):  # measured where the config has loss.impl
        assert steps[f"bench:{name}"] == "passed" or steps[f"bench:{name}"].startswith(
            "not available: loss.impl="
        )
    assert record["peak_matmul_tflops"] > 0
    for name, row in record["summary"].items():
        assert row["measured_steps"] == record["profile"]["steps"], name
        assert row["tokens_per_s"] > 0 and 0 < row["mfu"] <= row["mfu_computed"] + 1e-9, name
        assert row["peak_memory_mib"] > 0 and row["all_finite"], name
    varlen, padding = record["summary"]["packing_varlen"], record["summary"]["padding_sdpa"]
    assert varlen["computed_over_real"] == 1.0 and padding["computed_over_real"] > 1.0
    assert varlen["attention_calls"]["per_segment_sdpa"] > 0  # the CPU varlen path ran
    assert "packing_varlen_vs_padding_sdpa" in record["comparisons"]
    part = record["parts"]["bench:packing_varlen"]
    assert part["attn"] == "varlen" and part["mixed_precision"] == "bf16"
    assert part["shape"]["non_embedding_params"] < part["shape"]["params"]
