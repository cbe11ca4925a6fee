"""sft.startup over fake inputs: every mismatch is refused with one line naming both sides."""

from __future__ import annotations

import pytest

from sft.errors import UserError
from sft.startup import check_setup, check_wrapped, deepspeed_offload

OK = {"expect_processes": 0, "expect_zero_stage": 0, "zero_stage": 0, "env_world_size": None}


def _check(**kw):
    args = {**OK, **kw}
    check_setup(**args)


@pytest.mark.parametrize(
    "expected, dtype, n, stage",
    [
        ("single", "NO", 1, 0),
        ("ddp", "MULTI_GPU", 8, 0),
        ("ddp", "MULTI_CPU", 2, 0),
        ("ddp", "NO", 1, 0),  # a DDP config may run as one process when it does not pin the count
        ("zero3", "DEEPSPEED", 2, 3),
        ("zero3_offload", "DEEPSPEED", 32, 3),
        ("fsdp2", "FSDP", 8, 0),
    ],
)
def test_matching_setups_pass(expected, dtype, n, stage):
    _check(
        expected=expected,
        distributed_type=dtype,
        num_processes=n,
        zero_stage=stage,
        expect_zero_stage=stage,
        env_world_size=n if n > 1 else None,
    )


def _refusal(**kw) -> str:
    with pytest.raises(UserError) as e:
        _check(**kw)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_two_process_ddp_config_started_as_one_process():
    msg = _refusal(expected="ddp", expect_processes=2, distributed_type="NO", num_processes=1)
    assert "distributed=ddp" in msg and "NO with 1 process(es)" in msg and "ddp.yaml" in msg


def test_process_count_mismatch_names_both_counts():
    msg = _refusal(
        expected="ddp",
        expect_processes=4,
        distributed_type="MULTI_GPU",
        num_processes=2,
        env_world_size=2,
    )
    assert "expect_processes=4" in msg and "2 process(es)" in msg


def test_zero3_without_deepspeed():
    msg = _refusal(expected="zero3", distributed_type="NO", num_processes=1)
    assert "expects deepspeed" in msg and "launch/accelerate/zero3.yaml" in msg


def test_zero3_with_accelerate_use_cpu_names_the_variable():
    msg = _refusal(
        expected="zero3",
        distributed_type="MULTI_CPU",
        num_processes=2,
        env_world_size=2,
        use_cpu_env=True,
    )
    assert "ACCELERATE_USE_CPU" in msg and "MULTI_CPU with 2 process(es)" in msg


def test_ranks_that_each_think_they_are_alone():
    msg = _refusal(
        expected="zero3",
        distributed_type="DEEPSPEED",
        num_processes=1,
        zero_stage=3,
        env_world_size=2,
    )
    assert "WORLD_SIZE=2" in msg and "gloo" in msg


def test_wrong_zero_stage():
    msg = _refusal(
        expected="zero3",
        distributed_type="DEEPSPEED",
        num_processes=2,
        zero_stage=2,
        expect_zero_stage=3,
    )
    assert "zero_stage=3" in msg and "stage 2" in msg


@pytest.mark.parametrize(
    "expected, offload, other",
    [("zero3", True, "zero3_offload"), ("zero3_offload", False, "zero3")],
)
def test_offload_must_match_the_config(expected, offload, other):
    msg = _refusal(
        expected=expected,
        distributed_type="DEEPSPEED",
        num_processes=2,
        zero_stage=3,
        offload=offload,
    )
    assert f"distributed={expected}" in msg and other in msg


def test_fsdp2_is_refused_on_cpu_whatever_accelerate_reports():
    for dtype in ("MULTI_CPU", "FSDP"):
        msg = _refusal(expected="fsdp2", distributed_type=dtype, num_processes=2, cuda=False)
        assert "fsdp2 needs CUDA" in msg
    _check(expected="fsdp2", distributed_type="FSDP", num_processes=2, cuda=True)


def test_a_single_config_refuses_a_multi_process_launch():
    msg = _refusal(expected="single", distributed_type="MULTI_CPU", num_processes=2)
    assert "distributed=single" in msg and "MULTI_CPU with 2" in msg


def test_deepspeed_offload_reads_both_offload_sections():
    assert not deepspeed_offload({"zero_optimization": {"stage": 3}})
    assert not deepspeed_offload({"zero_optimization": {"offload_param": {"device": "none"}}})
    assert deepspeed_offload({"zero_optimization": {"offload_optimizer": {"device": "cpu"}}})
    assert deepspeed_offload({"zero_optimization": {"offload_param": {"device": "nvme"}}})


@pytest.mark.parametrize(
    "expected, n, names",
    [
        ("single", 1, ["LlamaForCausalLM", "PreTrainedModel", "Module"]),
        ("ddp", 1, ["LlamaForCausalLM", "Module"]),
        ("ddp", 2, ["DistributedDataParallel", "Module"]),
        ("zero3", 1, ["DeepSpeedEngine", "Module"]),
        ("zero3_offload", 2, ["DeepSpeedEngine", "Module"]),
        ("fsdp2", 8, ["FSDPLlamaForCausalLM", "FSDPModule", "LlamaForCausalLM", "Module"]),
    ],
)
def test_wrapped_model_matches(expected, n, names):
    check_wrapped(expected, n, names)


@pytest.mark.parametrize(
    "expected, n, names, words",
    [
        ("ddp", 2, ["LlamaForCausalLM", "Module"], ("DistributedDataParallel", "LlamaForCausalLM")),
        (
            "zero3",
            2,
            ["DistributedDataParallel", "Module"],
            ("DeepSpeedEngine", "DistributedDataParallel"),
        ),
        ("single", 1, ["DeepSpeedEngine", "Module"], ("distributed=single", "DeepSpeedEngine")),
    ],
)
def test_wrong_wrapper_is_refused(expected, n, names, words):
    with pytest.raises(UserError) as e:
        check_wrapped(expected, n, names)
    assert all(w in str(e.value) for w in words)
