"""sft.launch: SLURM variables -> launcher arguments, run directory and sweep plan (no Slurm needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sft.errors import UserError
from sft.launch import (
    DISTRIBUTED_NAMES,
    accelerate_config_for,
    check_config_fits,
    expand_sweep,
    launch_command,
    main,
    override_value,
    recorded_exit_code,
    run_dir_for_job,
)
from sft.slurm_world import (
    LaunchArgs,
    derived_port,
    expand_nodelist,
    procs_per_node_from_env,
    slurm_launch_args,
)

ROOT = Path(__file__).resolve().parents[2]


def job_env(nodes: int, node_id: int, nodelist: str, job_id: str = "4242", **extra: str) -> dict:
    env = {
        "SLURM_JOB_NUM_NODES": str(nodes),
        "SLURM_NODEID": str(node_id),
        "SLURM_JOB_NODELIST": nodelist,
        "SLURM_JOB_ID": job_id,
    }
    env.update(extra)
    return env


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / "launch" / "accelerate" / f"{name}.yaml").read_text())


# ----------------------------------------------------------------------------- node lists
@pytest.mark.parametrize(
    "nodelist, hosts",
    [
        ("gpu07", ["gpu07"]),
        ("node[01-04,07],gpu5", ["node01", "node02", "node03", "node04", "node07", "gpu5"]),
        ("a[8-10]", ["a8", "a9", "a10"]),
        ("a[008-010]", ["a008", "a009", "a010"]),
        ("r[1-2]n[1-2]", ["r1n1", "r1n2", "r2n1", "r2n2"]),
        ("x-ib[3,5]-eth,y", ["x-ib3-eth", "x-ib5-eth", "y"]),
    ],
)
def test_expand_nodelist(nodelist: str, hosts: list[str]) -> None:
    assert expand_nodelist(nodelist) == hosts


@pytest.mark.parametrize("bad", ["node[3-1]", "node[01-", "node[a-b]", "", "n]1["])
def test_expand_nodelist_rejects_malformed(bad: str) -> None:
    with pytest.raises(UserError):
        expand_nodelist(bad)


# ----------------------------------------------------------------------------- launch args
def test_one_node_eight_gpus() -> None:
    args = slurm_launch_args(job_env(1, 0, "gpu07", job_id="12345", SLURM_GPUS_ON_NODE="8"))
    assert args == LaunchArgs(
        num_machines=1,
        machine_rank=0,
        main_process_ip="gpu07",
        main_process_port=22345,
        procs_per_node=8,
    )
    assert args.num_processes == 8


def test_four_nodes_agree_on_everything_but_their_rank() -> None:
    seen = [
        slurm_launch_args(job_env(4, r, "node[01-04]", SLURM_GPUS_PER_NODE="a100:4"))
        for r in range(4)
    ]
    assert [a.machine_rank for a in seen] == [0, 1, 2, 3]
    assert {
        (a.num_machines, a.main_process_ip, a.main_process_port, a.procs_per_node) for a in seen
    } == {(4, "node01", derived_port("4242"), 4)}
    assert seen[2].num_processes == 16
    assert seen[2].accelerate_args() == [
        "--num_machines",
        "4",
        "--machine_rank",
        "2",
        "--main_process_ip",
        "node01",
        "--main_process_port",
        str(derived_port("4242")),
        "--num_processes",
        "16",
    ]


def test_fallback_variables_and_overrides() -> None:
    env = {
        "SLURM_NNODES": "2",
        "SLURM_NODEID": "1",
        "SLURM_NODELIST": "cn[5-6]",
        "SLURM_JOB_ID": "7",
        "MASTER_ADDR": "10.0.0.9",
        "MASTER_PORT": "31000",
    }
    args = slurm_launch_args(env, procs_per_node=2)
    assert (
        args.num_machines,
        args.machine_rank,
        args.main_process_ip,
        args.main_process_port,
        args.num_processes,
    ) == (2, 1, "10.0.0.9", 31000, 4)


def test_explicit_procs_per_node_wins_over_slurm_gpus() -> None:
    args = slurm_launch_args(job_env(1, 0, "n1", SLURM_GPUS_ON_NODE="8"), procs_per_node=1)
    assert args.procs_per_node == 1


def test_hostname_resolver_is_used_for_the_main_address() -> None:
    calls = []

    def resolver(nodelist: str) -> list[str]:
        calls.append(nodelist)
        return ["first-host", "second-host"]

    args = slurm_launch_args(job_env(2, 0, "weird{list}"), 1, hostnames=resolver)
    assert calls == ["weird{list}"] and args.main_process_ip == "first-host"


@pytest.mark.parametrize(
    "missing", ["SLURM_JOB_NUM_NODES", "SLURM_NODEID", "SLURM_JOB_NODELIST", "SLURM_JOB_ID"]
)
def test_missing_variable_names_itself_in_one_line(missing: str) -> None:
    env = job_env(2, 0, "n[1-2]")
    del env[missing]
    with pytest.raises(UserError) as err:
        slurm_launch_args(env, procs_per_node=1)
    assert missing in str(err.value) and "\n" not in str(err.value)


def test_no_gpu_count_asks_for_procs_per_node() -> None:
    with pytest.raises(UserError, match="--procs-per-node"):
        slurm_launch_args(job_env(2, 0, "n[1-2]"))


@pytest.mark.parametrize(
    "env_update, match",
    [
        ({"SLURM_NODEID": "2"}, "outside 0..1"),
        ({"SLURM_NODEID": "x"}, "SLURM_NODEID"),
        ({"SLURM_JOB_NUM_NODES": "0"}, "SLURM_JOB_NUM_NODES"),
        ({"MASTER_PORT": "70000"}, "65535"),
        ({"SLURM_GPUS_ON_NODE": "zero"}, "SLURM_GPUS_ON_NODE"),
    ],
)
def test_inconsistent_values_are_refused(env_update: dict, match: str) -> None:
    env = {**job_env(2, 0, "n[1-2]"), **env_update}
    with pytest.raises(UserError, match=match):
        slurm_launch_args(env, procs_per_node=None if "SLURM_GPUS_ON_NODE" in env_update else 1)


@pytest.mark.parametrize("spec, count", [("4", 4), ("a100:4", 4), ("a100:2,v100:2", 4)])
def test_gpus_per_node_formats(spec: str, count: int) -> None:
    assert procs_per_node_from_env({"SLURM_GPUS_PER_NODE": spec}) == count
    assert procs_per_node_from_env({}) is None


def test_derived_port_is_deterministic_and_below_the_ephemeral_range() -> None:
    ports = {derived_port(str(j)) for j in (1, 9999, 10000, 123456789)}
    assert ports == {20001, 29999, 20000, 26789}
    assert derived_port("55") == derived_port("55")


# ----------------------------------------------------------------------------- configs
def test_every_trainer_distributed_option_has_an_accelerate_config() -> None:
    options = sorted(p.stem for p in (ROOT / "configs" / "distributed").glob("*.yaml"))
    options.remove("auto")  # follows whichever accelerate config the user launches
    assert options == sorted(DISTRIBUTED_NAMES)
    for name in options:
        for nodes in (1, 4):
            assert accelerate_config_for(name, nodes, ROOT).is_file()
    assert accelerate_config_for("zero3", 4, ROOT).name == "multinode_zero3.yaml"
    with pytest.raises(UserError):
        accelerate_config_for("zero2", 1, ROOT)


def _world(nodes: int, ppn: int) -> LaunchArgs:
    return LaunchArgs(nodes, 0, "h", 20001, ppn)


@pytest.mark.parametrize(
    "name, nodes, ppn, use_cpu, gpus, match",
    [
        ("single", 1, 2, False, 2, "runs one process"),
        ("ddp", 1, 1, True, 0, "at least 2 processes"),
        ("ddp", 2, 1, False, 0, "ACCELERATE_USE_CPU=true"),
        ("zero3", 2, 8, False, 8, "multinode_zero3"),
        ("zero3", 1, 2, True, 0, "drop DeepSpeed"),
        ("fsdp2", 1, 2, True, 0, "FSDP"),
    ],
)
def test_config_that_cannot_run_the_world_is_refused(
    name, nodes, ppn, use_cpu, gpus, match
) -> None:
    with pytest.raises(UserError, match=match):
        check_config_fits(load(name), _world(nodes, ppn), use_cpu=use_cpu, gpus_here=gpus)


@pytest.mark.parametrize(
    "name, nodes, ppn, use_cpu, gpus",
    [
        ("single", 1, 1, False, 0),
        ("ddp", 2, 1, True, 0),
        ("ddp", 4, 8, False, 8),
        ("multinode_zero3", 4, 8, False, 8),
        ("zero3_offload", 2, 8, False, 8),
        ("fsdp2", 2, 8, False, 8),
    ],
)
def test_config_that_fits_is_accepted(name, nodes, ppn, use_cpu, gpus) -> None:
    check_config_fits(load(name), _world(nodes, ppn), use_cpu=use_cpu, gpus_here=gpus)


def test_one_process_runs_the_script_directly_others_through_accelerate() -> None:
    one = launch_command(
        _world(1, 1), ["a=1"], "py", "sft/train.py", Path("x.yaml"), load("single")
    )
    assert one == ["py", "sft/train.py", "a=1"]
    many = launch_command(_world(2, 1), ["a=1"], "py", "sft/train.py", Path("d.yaml"), load("ddp"))
    assert many[:5] == ["py", "-m", "accelerate.commands.launch", "--config_file", "d.yaml"]
    assert many[-2:] == ["sft/train.py", "a=1"] and "--machine_rank" in many


# ----------------------------------------------------------------------------- run dir, sweep
def test_run_dir_is_pinned_to_the_job_id() -> None:
    env = {"SLURM_JOB_ID": "991"}
    assert run_dir_for_job(env, []) == "outputs/default/991"
    assert (
        run_dir_for_job(env, ["experiment=a", "experiment=lima"], "/scratch") == "/scratch/lima/991"
    )
    assert run_dir_for_job(env, ["run_dir=/my/run"]) == "/my/run"
    with pytest.raises(UserError, match="SLURM_JOB_ID"):
        run_dir_for_job({}, [])


def test_override_value_takes_the_last_one() -> None:
    assert (
        override_value(["distributed=ddp", "x=1", "++distributed=zero3"], "distributed") == "zero3"
    )
    assert override_value(["x=1"], "distributed") is None


def test_sweep_expands_comma_lists_into_their_product() -> None:
    jobs = expand_sweep(["collator=padding,packing", "model=tiny", "k=[1,2]", "seed=0,1"])
    assert jobs == [
        ["collator=padding", "model=tiny", "k=[1,2]", "seed=0"],
        ["collator=padding", "model=tiny", "k=[1,2]", "seed=1"],
        ["collator=packing", "model=tiny", "k=[1,2]", "seed=0"],
        ["collator=packing", "model=tiny", "k=[1,2]", "seed=1"],
    ]


def test_sweep_follows_hydras_grammar() -> None:
    assert expand_sweep(["seed=range(0,3)", "model=tiny"]) == [
        ["seed=0", "model=tiny"],
        ["seed=1", "model=tiny"],
        ["seed=2", "model=tiny"],
    ]
    assert expand_sweep(["data.system_prompt='a,b'"]) == [["data.system_prompt='a,b'"]]


@pytest.mark.parametrize("bad", ["collator", "a=1,,2", "a=[1,2"])
def test_sweep_refuses_what_hydra_cannot_parse(bad: str) -> None:
    with pytest.raises(UserError, match="cannot parse the sweep override"):
        expand_sweep([bad])


def test_recorded_exit_code_reads_only_this_attempts_summary(tmp_path: Path) -> None:
    assert recorded_exit_code(tmp_path, since=0) is None  # no summary yet
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"exit_code": 75, "steps": 4}))
    os.utime(summary, (1000.0, 1000.0))
    assert recorded_exit_code(tmp_path, since=999.0) == 75
    assert recorded_exit_code(tmp_path, since=1001.0) is None  # left by an earlier attempt
    summary.write_text("{not json")
    assert recorded_exit_code(tmp_path, since=0) is None


# ----------------------------------------------------------------------------- CLI
def test_cli_prints_the_full_command_for_this_node(monkeypatch, capsys) -> None:
    for key, value in job_env(
        2, 1, "n[1-2]", job_id="17", MASTER_ADDR="127.0.0.1", ACCELERATE_USE_CPU="true"
    ).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("ACCELERATE_CONFIG", raising=False)
    monkeypatch.chdir(ROOT)
    assert main(["slurm-args", "--procs-per-node", "1", "--python", "py", "--", "model=tiny"]) == 0
    words = capsys.readouterr().out.split()
    assert words[:5] == [
        "py",
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        "launch/accelerate/ddp.yaml",
    ]
    assert words[words.index("--machine_rank") + 1] == "1"
    assert words[-3:] == ["sft/train.py", "distributed=ddp", "model=tiny"]


def test_preset_chooses_its_engine_when_no_distributed_override(monkeypatch, capsys) -> None:
    for key, value in job_env(4, 0, "gpu[01-04]", job_id="7").items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("ACCELERATE_CONFIG", raising=False)
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    monkeypatch.chdir(ROOT)
    assert (
        main(
            [
                "slurm-args",
                "--procs-per-node",
                "8",
                "--python",
                "py",
                "--",
                "experiment=paper_llama3_8b",
                "collator=packing",
            ]
        )
        == 0
    )
    words = capsys.readouterr().out.split()
    assert words[words.index("--config_file") + 1] == "launch/accelerate/multinode_zero3.yaml"
    assert "distributed=ddp" not in words and words[-2:] == [
        "experiment=paper_llama3_8b",
        "collator=packing",
    ]


def test_cli_error_is_one_line_and_exit_code_2() -> None:
    env = {"PATH": "/usr/bin:/bin", "SLURM_NODEID": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "sft.launch", "slurm-args"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: SLURM_JOB_NUM_NODES")
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("script", ["train.sbatch", "node.sh", "sweep.sh"])
def test_shell_scripts_parse(script: str) -> None:
    done = subprocess.run(
        ["bash", "-n", str(ROOT / "launch" / "slurm" / script)],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
