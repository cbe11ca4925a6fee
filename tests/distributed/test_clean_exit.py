"""A finished multi-process run ends without tearing down live communication threads.

torch's DDP wrapper and DeepSpeed's ZeRO-3 hooks keep their process groups referenced after
`destroy_process_group`, so gloo's worker threads outlive the run; left to interpreter shutdown
they were seen to abort a finished 2-process ZeRO-3 run (SIGABRT, "terminate called without an
active exception"). Every rank must end after its run without entering that shutdown while such
a thread is alive (sft/engine.py `end_process`). The ZeRO-3 path is checked on the
`zero3_packing_run` fixture, whose probe records the same thing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.distributed.launching import (
    accelerate_cmd,
    check_ok,
    clean_env,
    run,
    two_process_overrides,
)

pytestmark = [pytest.mark.distributed, pytest.mark.slow]
PROBE = str(Path(__file__).with_name("exit_probe.py"))
if not sys.platform.startswith("linux"):
    pytest.skip("reads thread names from /proc", allow_module_level=True)


def comm_threads_at_shutdown(out: Path) -> dict[str, list[str]]:
    """rank file -> communication threads alive when interpreter shutdown began (none ran: {})."""
    found = {}
    for f in sorted(out.glob("shutdown_rank*.json")):
        names = [n for n in json.loads(f.read_text()) if "gloo" in n or "nccl" in n.lower()]
        if names:
            found[f.name] = names
    return found


def test_ddp_run_exits_with_no_communication_thread_left_to_shutdown(tmp_path, tiny_model_dir):
    out = tmp_path / "run"
    out.mkdir()
    cmd = accelerate_cmd("ddp", 2, script=PROBE) + [str(out)]
    proc = run(
        cmd + two_process_overrides(tiny_model_dir, "ddp", "packing", out),
        env=clean_env(ACCELERATE_USE_CPU="true"),
    )
    check_ok(proc, "2-process DDP run")
    assert json.loads((out / "summary.json").read_text())["exit_code"] == 0
    assert "[sft] done" in proc.stdout  # the closing line still reaches the terminal
    assert comm_threads_at_shutdown(out) == {}


def test_zero3_run_exits_with_no_communication_thread_left_to_shutdown(zero3_packing_run):
    assert (zero3_packing_run / "live_weights.safetensors").is_file()  # the probe ran to its end
    assert comm_threads_at_shutdown(zero3_packing_run) == {}


def test_zero3_close_leaves_no_group_and_no_model_in_deepspeed_globals(zero3_packing_run):
    states = [json.loads(f.read_text()) for f in zero3_packing_run.glob("after_close_rank*.json")]
    assert len(states) == 2
    for state in states:
        assert state == {"initialized": False, "forward_stack": 0, "world_group": False}
