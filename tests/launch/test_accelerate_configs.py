"""The shipped accelerate YAMLs and DeepSpeed JSONs load with accelerate's own classes and launcher.

Fast checks read them through `load_config_from_file`, the `accelerate launch` argument
validation and the plugins built from the launcher's environment; the slow one trains a tiny
model one step under each DeepSpeed file and checks that no "auto" survived.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import patch_environment

ROOT = Path(__file__).resolve().parents[2]
ACC = ROOT / "launch" / "accelerate"
DS = ROOT / "launch" / "deepspeed"
EXPECTED_TYPE = {
    "single": "NO",
    "ddp": "MULTI_GPU",
    "zero3": "DEEPSPEED",
    "multinode_zero3": "DEEPSPEED",
    "zero3_offload": "DEEPSPEED",
    "fsdp2": "FSDP",
}
# Keys the training config owns: a DeepSpeed JSON must leave them to it.
TRAINING_OWNED = (
    "train_batch_size",
    "train_micro_batch_size_per_gpu",
    "gradient_accumulation_steps",
    "gradient_clipping",
)
# accelerate refuses these next to a deepspeed_config_file (it would silently ignore them).
IGNORED_WITH_DS_FILE = (
    "gradient_accumulation_steps",
    "gradient_clipping",
    "zero_stage",
    "offload_optimizer_device",
    "offload_param_device",
    "zero3_save_16bit_model",
)


def test_the_expected_files_ship() -> None:
    assert sorted(p.stem for p in ACC.glob("*.yaml")) == sorted(EXPECTED_TYPE)
    assert sorted(p.name for p in DS.glob("*.json")) == ["zero3.json", "zero3_offload.json"]


@pytest.mark.parametrize("name", sorted(EXPECTED_TYPE))
def test_yaml_loads_with_accelerate(name: str) -> None:
    config = load_config_from_file(str(ACC / f"{name}.yaml"))
    assert isinstance(config, ClusterConfig)
    assert config.distributed_type.value == EXPECTED_TYPE[name]
    assert config.mixed_precision is None  # precision is the training config's (model.dtype)
    if EXPECTED_TYPE[name] == "DEEPSPEED":
        ds = config.deepspeed_config
        assert (ROOT / ds["deepspeed_config_file"]).is_file()
        assert not set(ds) & set(IGNORED_WITH_DS_FILE)
    if name == "multinode_zero3":
        assert config.deepspeed_config["deepspeed_multinode_launcher"] == "standard"


def _launcher_args(name: str, machines: int, procs: int):
    parsed = launch_command_parser().parse_args(
        [
            "--config_file",
            str(ACC / f"{name}.yaml"),
            "--num_machines",
            str(machines),
            "--machine_rank",
            "0",
            "--main_process_ip",
            "127.0.0.1",
            "--main_process_port",
            "20001",
            "--num_processes",
            str(procs),
            "sft/train.py",
            "model=tiny",
        ]
    )
    args, defaults, mp_from_config = _validate_launch_command(parsed)
    return args, defaults, mp_from_config


@pytest.mark.parametrize(
    "name, machines, procs",
    [
        ("single", 1, 1),
        ("ddp", 2, 4),
        ("zero3", 1, 2),
        ("multinode_zero3", 4, 32),
        ("zero3_offload", 2, 4),
        ("fsdp2", 1, 8),
    ],
)
def test_accelerate_launch_accepts_the_slurm_world(name: str, machines: int, procs: int) -> None:
    args, _, _ = _launcher_args(name, machines, procs)
    assert (args.num_machines, args.num_processes) == (machines, procs)
    assert args.use_deepspeed == (EXPECTED_TYPE[name] == "DEEPSPEED")
    assert args.multi_gpu == (name == "ddp")
    assert args.use_fsdp == (name == "fsdp2")


@pytest.mark.parametrize("name", ["zero3", "multinode_zero3", "zero3_offload"])
def test_deepspeed_plugin_builds_from_the_launcher_environment(name: str) -> None:
    from accelerate.utils import DeepSpeedPlugin
    from accelerate.utils.launch import prepare_deepspeed_cmd_env

    args, defaults, mp_from_config = _launcher_args(name, 2 if name != "zero3" else 1, 2)
    fields = list(defaults.deepspeed_config) + (["mixed_precision"] if mp_from_config else [])
    args.deepspeed_fields_from_accelerate_config = ",".join(fields)
    _, env = prepare_deepspeed_cmd_env(args)
    with patch_environment(**{k: v for k, v in env.items() if k.startswith("ACCELERATE")}):
        plugin = DeepSpeedPlugin()  # raises on a config variable that clashes with the JSON
    assert plugin.deepspeed_config["zero_optimization"]["stage"] == 3
    assert plugin.zero3_init_flag is True


def test_fsdp2_plugin_builds_from_the_launcher_environment() -> None:
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_multi_gpu_env

    args, _, _ = _launcher_args("fsdp2", 1, 2)
    env = prepare_multi_gpu_env(args)
    with patch_environment(
        **{k: v for k, v in env.items() if k.startswith(("FSDP", "ACCELERATE"))}
    ):
        plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True


@pytest.mark.parametrize("path", sorted(DS.glob("*.json")), ids=lambda p: p.name)
def test_deepspeed_json_leaves_training_values_to_the_training_config(path: Path) -> None:
    conf = json.loads(path.read_text())
    for key in TRAINING_OWNED:
        assert conf[key] == "auto", key
    assert conf["bf16"]["enabled"] == "auto" and conf["fp16"]["enabled"] == "auto"
    assert "optimizer" not in conf and "scheduler" not in conf  # the trainer builds both
    assert conf["zero_optimization"]["stage"] == 3


@pytest.mark.slow
@pytest.mark.parametrize("name", ["zero3", "zero3_offload"])
def test_deepspeed_json_trains_with_every_auto_filled(name: str, tmp_path: Path) -> None:
    """One process, CPU: DeepSpeed accepts the JSON and accelerate fills every "auto"."""
    env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}
    env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            f"launch/accelerate/{name}.yaml",
            "--num_processes",
            "1",
            "--main_process_port",
            "0",
            str(Path(__file__).with_name("ds_probe.py")),
            str(tmp_path / "result.json"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=400,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    result = json.loads((tmp_path / "result.json").read_text())
    conf = result["config"]
    assert "auto" not in json.dumps(conf)
    assert conf["train_micro_batch_size_per_gpu"] == 3
    assert conf["gradient_accumulation_steps"] == 2
    assert conf["train_batch_size"] == 6
    assert conf["gradient_clipping"] == 0.5  # what the probe (as the trainer does) put there
    assert conf["bf16"]["enabled"] is False
    assert len(result["losses"]) == 4 and all(0 < x < 10 for x in result["losses"])
