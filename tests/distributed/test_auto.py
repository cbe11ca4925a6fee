"""`distributed=auto` (the default): the trainer follows whatever the launcher set up.

The mission's own line, `accelerate launch sft/train.py collator=packing`, under a launcher that
starts two processes (DDP over gloo, the CPU stand-in for a multi-GPU node) and with every
shipped accelerate file, with no `distributed=` on the command line; the engine found is in
summary.json and config.yaml. An explicit `distributed=NAME` keeps the strict check.
"""

from __future__ import annotations

import json
import sys

import pytest
import yaml

from .launching import ACCELERATE, TRAIN, check_ok, clean_env, free_port, run

pytestmark = [pytest.mark.slow, pytest.mark.distributed]
TINY = [
    "collator=packing", "model=tiny", "data=demo", "data.demo_size=60", "data.max_length=512",
    "data.max_bad_fraction=0.5", "train.max_steps=3", "train.progress=false",
    "train.report_to=none",
]  # fmt: skip


def _summary(run_dir):
    return json.loads((run_dir / "summary.json").read_text())


def test_the_mission_command_as_written_with_two_processes(tmp_path):
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--main_process_port", str(free_port()), TRAIN, *TINY, f"run_dir={tmp_path / 'run'}",
    ]  # fmt: skip
    proc = run(cmd, env=clean_env(ACCELERATE_USE_CPU="true"))
    check_ok(proc, "accelerate launch --multi_gpu --num_processes 2 sft/train.py collator=packing")
    summary = _summary(tmp_path / "run")
    assert summary["world_size"] == 2 and summary["engine"] == "ddp" and summary["exit_code"] == 0
    assert (
        yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["distributed"]["name"]
        == "ddp"
    )
    assert (
        "[sft] engine ddp (MULTI_CPU, 2 process(es), CPU; found: distributed=auto)" in proc.stdout
    )


@pytest.mark.parametrize(
    "config,engine",
    [("ddp", "ddp"), ("zero3", "zero3"), ("zero3_offload", "zero3_offload")],
)
def test_every_shipped_accelerate_file_without_naming_the_engine(tmp_path, config, engine):
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(ACCELERATE / f"{config}.yaml"), "--num_processes", "2",
        "--main_process_port", str(free_port()), TRAIN, *TINY, f"run_dir={tmp_path / 'run'}",
    ]  # fmt: skip
    env = clean_env(ACCELERATE_USE_CPU="true") if config == "ddp" else clean_env()
    proc = run(cmd, env=env)
    check_ok(proc, f"{config} with distributed=auto")
    summary = _summary(tmp_path / "run")
    assert (summary["world_size"], summary["engine"]) == (2, engine)


def test_an_explicit_engine_that_does_not_match_is_still_refused(tmp_path):
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--main_process_port", str(free_port()), TRAIN, *TINY, "distributed=single",
        f"run_dir={tmp_path / 'run'}",
    ]  # fmt: skip
    proc = run(cmd, env=clean_env(ACCELERATE_USE_CPU="true"))
    assert proc.returncode != 0
    assert "distributed=single expects no but the launcher started MULTI_CPU with 2" in proc.stderr
