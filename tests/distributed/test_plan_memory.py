"""sft-plan's arithmetic against hand-computed values, and its CLI end to end (fast)."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf

from sft.plan_cli import main, setup_from_config
from sft.plan_memory import (
    LLAMA3_8B,
    LLAMA3_70B,
    SMOLLM2_135M,
    MemorySetup,
    activation_memory,
    bytes_per_param,
    grads_at_peak,
    logits_memory,
    peak_memory,
    resolve_shape,
    state_memory,
)
from sft.plan_steps import epoch_estimate, train_flops
from tests.planning import batching, plan_epoch, targets_of

P8 = 8_030_261_248


def test_parameter_counts_by_hand():
    # SmolLM2-135M: tied 49152 x 576 embedding + 30 x (attention 884,736 + MLP 2,654,208 + norms 1,152) + 576
    assert SMOLLM2_135M.num_params() == 28_311_552 + 30 * 3_540_096 + 576 == 134_515_008
    # Llama-3-8B: 2 x 128256 x 4096 (untied) + 32 x (41,943,040 + 176,160,768 + 8,192) + 4096
    assert LLAMA3_8B.num_params() == 2 * 525_336_576 + 32 * 218_112_000 + 4096 == P8
    assert LLAMA3_70B.num_params() == 2 * 1_050_673_152 + 80 * 855_654_400 + 8192 == 70_553_706_496


def test_built_in_shapes_resolve_offline():
    assert resolve_shape("meta-llama/Meta-Llama-3-8B") == LLAMA3_8B
    assert resolve_shape("meta-llama/Meta-Llama-3-70B-Instruct") == LLAMA3_70B
    assert resolve_shape("smollm2") == SMOLLM2_135M
    tiny = resolve_shape("tiny", tiny_hidden_size=64, tiny_layers=2)
    assert (tiny.hidden_size, tiny.intermediate_size, tiny.num_layers, tiny.head_dim) == (
        64,
        128,
        2,
        16,
    )


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral", "qwen3"])
def test_shape_of_a_local_folder_matches_the_real_model(arch, tmp_path):
    from sft.models.tiny import build_tiny_model

    model = build_tiny_model(arch, hidden_size=32, num_layers=3)
    model.config.save_pretrained(tmp_path)
    assert resolve_shape(str(tmp_path)).num_params() == sum(p.numel() for p in model.parameters())


def test_unknown_hub_model_is_one_line():
    from sft.errors import UserError

    with pytest.raises(UserError, match="built-in names"):
        resolve_shape("nobody/no-such-model-xyz")


def test_8b_zero3_on_32_gpus_is_16_bytes_per_param_split_32_ways():
    s = state_memory(
        LLAMA3_8B, MemorySetup(gpus=32, zero_stage=3, engine="deepspeed", dtype="bf16")
    )
    assert (s.weights, s.grads, s.optimizer) == (P8 * 2 / 32, P8 * 2 / 32, P8 * 12 / 32)
    assert s.weights + s.grads + s.optimizer == pytest.approx(16 * P8 / 32)  # ~3.74 GiB
    assert s.cpu == 0
    # the gathered unit is the 128256 x 4096 embedding (larger than a layer): bf16 weights + grads
    assert s.gathered == 525_336_576 * 2 * 2


@pytest.mark.parametrize(
    "stage, expected",
    [(0, (2, 2, 12)), (1, (2, 2, 12 / 8)), (2, (2, 2 / 8, 12 / 8)), (3, (2 / 8, 2 / 8, 12 / 8))],
)
def test_each_zero_stage_splits_one_more_state(stage, expected):
    s = state_memory(
        LLAMA3_8B, MemorySetup(gpus=8, zero_stage=stage, engine="deepspeed", dtype="bf16")
    )
    assert (s.weights, s.grads, s.optimizer) == pytest.approx(tuple(P8 * b for b in expected))
    assert (s.gathered > 0) == (stage == 3)


def test_offload_moves_states_to_cpu():
    p70 = LLAMA3_70B.num_params()
    s = state_memory(LLAMA3_70B, setup_from_config("zero3_offload", 3, "bf16", 32, None))
    assert (s.weights, s.grads, s.optimizer) == (0, 0, 0)
    # fp32 master + m + v (12) and fp32 grad partitions (4) and bf16 weight shards (2), per rank
    assert s.cpu == pytest.approx(p70 * (12 + 4 + 2) / 32)
    only_opt = state_memory(LLAMA3_70B, setup_from_config("zero3", 3, "bf16", 32, "optimizer"))
    assert only_opt.weights == pytest.approx(p70 * 2 / 32) and only_opt.optimizer == 0


def test_bytes_per_param_follow_the_engine():
    assert bytes_per_param("deepspeed", "bf16") == (2, 2, 12)
    assert bytes_per_param("fsdp2", "bf16") == (4, 4, 8)
    assert bytes_per_param("plain", "bf16") == (4, 4, 8)  # fp32 master weights, bf16 autocast
    assert bytes_per_param("plain", "fp32") == bytes_per_param("deepspeed", "fp32") == (4, 4, 8)
    ddp = setup_from_config("ddp", 0, "bf16", 8, None)
    assert (ddp.engine, ddp.zero_stage) == ("plain", 0)
    assert setup_from_config("fsdp2", 0, "bf16", 8, None).zero_stage == 3


def test_invalid_setups_are_refused():
    from sft.errors import UserError

    with pytest.raises(UserError, match="stage 3"):
        MemorySetup(gpus=8, zero_stage=2, engine="deepspeed", dtype="bf16", offload_params=True)
    with pytest.raises(UserError, match="stage >= 1"):
        MemorySetup(gpus=8, zero_stage=0, engine="deepspeed", dtype="bf16", offload_optimizer=True)


def test_activations_by_hand():
    tiny = resolve_shape("tiny", 64, 2)  # h 64, q 64, kv 32, i 128
    per_token_layer = 6 * 64 + 3 * 64 + 2 * 32 + 4 * 128
    assert per_token_layer == 1152
    # saved set of every layer + the layer in backward (its activation gradients)
    full = activation_memory(tiny, rows=2, row_length=100, dtype="fp32", checkpointing=False)
    assert full == 3 * 1152 * 200 * 4 == 2_764_800
    # checkpointing: each layer's input + the recomputed layer's set and its gradients
    ckpt = activation_memory(tiny, rows=2, row_length=100, dtype="fp32", checkpointing=True)
    assert ckpt == 2 * 64 * 200 * 4 + 2 * 1152 * 200 * 4 == 1_945_600
    # bf16 weights (DeepSpeed): the norms' fp32 normalised inputs, the rest in 2 bytes
    half = 4 * 2 * 64 + 2 * (4 * 64 + 3 * 64 + 2 * 32 + 4 * 128)
    assert activation_memory(tiny, 2, 100, "bf16", False, "deepspeed") == 3 * half * 200
    # autocast (plain engine): fp32 residual norms, bf16 linear inputs, bf16 copies of the weights
    auto = 4 * 4 * 64 + 2 * (4 * 64 + 4 * 64 + 2 * 32 + 4 * 128)
    casts = 2 * (2 * tiny.layer_params() + tiny.lm_head_size())
    assert activation_memory(tiny, 2, 100, "bf16", False, "plain") == 3 * auto * 200 + casts
    # 8B, 2 x 4096 bf16 under DeepSpeed: 32 + 1 layers x 8,192 tokens x 208,896 bytes (~53 GiB)
    h, q, kv, i = 4096, 4096, 1024, 14336
    per = 4 * 2 * h + 2 * (4 * h + 3 * q + 2 * kv + 4 * i)
    assert per == 208_896
    assert activation_memory(LLAMA3_8B, 2, 4096, "bf16", False) == 33 * per * 8192


@pytest.mark.parametrize("precision", ["fp32", "autocast", "half"])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_activation_model_matches_what_autograd_saves(precision, checkpointing):
    """The per-layer census behind `activation_bytes_per_token_layer`, redone on the real
    transformers Llama layer: bytes autograd saves in one forward (weights excluded)."""
    import contextlib

    import torch

    from sft.models.build import load_model
    from sft.plan_memory import activation_bytes_per_token_layer

    shape = resolve_shape("tiny", 128, 3)
    dtype = "bf16" if precision == "half" else "fp32"
    model = load_model(
        "tiny", dtype=dtype, attn_implementation="varlen", gradient_checkpointing=checkpointing,
        tiny_hidden_size=128, tiny_layers=3, vocab_size=shape.vocab_size,
    )  # fmt: skip
    model.train()
    length = 256
    ids = torch.randint(0, shape.vocab_size, (1, length))
    pos = (torch.arange(length) % 64)[None]  # four packed samples
    cu = torch.arange(0, length + 1, 64, dtype=torch.int32)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            saved[s.data_ptr()] = max(saved.get(s.data_ptr(), 0), s.nbytes())
        return t

    autocast = (
        torch.autocast("cpu", dtype=torch.bfloat16)
        if precision == "autocast"
        else contextlib.nullcontext()
    )
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast:
        model.model(
            input_ids=ids, position_ids=pos, cu_seq_lens_q=cu, cu_seq_lens_k=cu,
            max_length_q=64, max_length_k=64,
        )  # fmt: skip
    per_layer = activation_bytes_per_token_layer(shape, precision) * length
    if checkpointing:  # only each layer's input is kept (in the residual stream's dtype)
        expected = shape.num_layers * shape.hidden_size * length * (2 if dtype == "bf16" else 4)
    else:
        casts = 2 * shape.layer_params() if precision == "autocast" else 0
        expected = shape.num_layers * (per_layer + casts)
    measured = sum(saved.values())
    # beyond the decoder layers: the final norm's fp32 tensors (at most 3h) and the rotary tables
    beyond = 3 * shape.hidden_size * length * 4 + 2 * length * shape.head_dim * 4
    assert expected <= measured <= expected + beyond, (measured, expected)


def test_logits_only_at_supervised_positions():
    tiny = resolve_shape("tiny", 64, 2)
    # full: log-softmax output, its gradient and the logits' gradient, fp32 (12 B per value)
    assert logits_memory(tiny, 2, 100, "fp32", 0.5) == 100 * 259 * 12
    assert logits_memory(tiny, 2, 100, "bf16", 1.0) == 200 * 259 * 12
    # chunked: one chunk of logits, 8 B each (fp32 logits + their log-sum-exp's temporary;
    # never more than the targets) + the head's weight gradient
    head = 259 * tiny.hidden_size
    assert logits_memory(tiny, 2, 100, "fp32", 0.5, "chunked", 30) == 30 * 259 * 8 + head * 4
    assert logits_memory(tiny, 2, 100, "bf16", 0.1, "chunked", 64) == 20 * 259 * 8 + head * 2


def test_gradients_count_at_the_peak_only_where_they_live_through_it():
    tiny = resolve_shape("tiny", 256, 4, 128256)
    one = MemorySetup(gpus=1, zero_stage=0, engine="plain", dtype="fp32")
    kw = {"rows": 2, "row_length": 512, "checkpointing": False, "supervised_fraction": 0.5}
    state = state_memory(tiny, one)
    act = activation_memory(tiny, 2, 512, "fp32", False, "plain")
    loss = logits_memory(tiny, 2, 512, "fp32", 0.5)
    # one process, no accumulation: zero_grad(set_to_none) after each step, grads made after
    # the loss, so the peak is the larger of the loss peak and backward's end
    alone = peak_memory(tiny, one, **kw)
    assert alone == state.weights + state.optimizer + max(act + loss, state.grads)
    # accumulation, DDP buckets and DeepSpeed's buffers keep them through the loss
    assert peak_memory(tiny, one, grad_accum=2, **kw) == state.gpu_total + act + loss
    ddp = MemorySetup(gpus=2, zero_stage=0, engine="plain", dtype="fp32")
    assert peak_memory(tiny, ddp, **kw) == state_memory(tiny, ddp).gpu_total + act + loss
    z3 = MemorySetup(gpus=1, zero_stage=3, engine="deepspeed", dtype="bf16")
    assert grads_at_peak(z3, 1)


def _pieces(lengths: list[int]) -> tuple[np.ndarray, np.ndarray]:
    ends = np.cumsum(lengths)
    pieces = np.stack([np.arange(len(lengths)), ends - lengths, ends], axis=1).astype(np.int64)
    return pieces, targets_of(np.ones(int(ends[-1]), dtype=bool), pieces)


def test_steps_per_epoch_by_hand():
    pieces, targets = _pieces([4] * 8)
    kw = {"micro_batch_size": 2, "grad_accum": 1, "gpus": 2}
    pad = epoch_estimate(pieces, targets, batching("padding", capacity=8), **kw)
    assert (pad.rows, pad.steps, pad.real_tokens, pad.computed_tokens) == (8, 2, 32, 32)
    packed = epoch_estimate(pieces, targets, batching("packing", capacity=8), **kw)
    assert (packed.rows, packed.steps, packed.computed_tokens) == (4, 1, 32)
    two = epoch_estimate(
        *_pieces([5, 3]),
        batching("padding", capacity=8),
        micro_batch_size=2,
        grad_accum=1,
        gpus=1,
    )
    assert (two.steps, two.computed_tokens, two.efficiency) == (1, 10, 0.8)
    assert two.attention_sq == 25 + 9


def test_steps_match_the_trainers_plan():
    rng = np.random.default_rng(0)
    pieces, targets = _pieces(list(rng.integers(10, 200, size=301)))
    mask = np.ones(int(pieces[-1, 2]), dtype=bool)
    for kind, strategy in (("padding", "bfd"), ("packing", "ffd"), ("packing", "random_concat")):
        est = epoch_estimate(
            pieces,
            targets,
            batching(kind, strategy=strategy, capacity=256),
            micro_batch_size=3,
            grad_accum=2,
            gpus=4,
        )
        plan = plan_epoch(
            pieces,
            mask,
            kind=kind,
            micro_batch_size=3,
            grad_accum=2,
            world_size=4,
            seed=0,
            epoch=0,
            capacity=256,
            strategy=strategy,
        )
        assert est.steps == len(plan) and est.real_tokens == plan.tokens


def test_steps_follow_batch_by_and_the_step_budget():
    from sft.data.step_budget import regroup

    rng = np.random.default_rng(1)
    pieces, targets = _pieces(list(rng.integers(10, 120, size=400)))
    mask = np.ones(int(pieces[-1, 2]), dtype=bool)
    packs = batching("packing", strategy="ffd", capacity=256)
    kw = {"micro_batch_size": 1, "grad_accum": 1, "gpus": 1}
    by_rows = epoch_estimate(pieces, targets, packs, **kw)
    by_samples = epoch_estimate(pieces, targets, packs, **kw, batch_by="samples", step_budget=8)
    plan = plan_epoch(
        pieces, mask, kind="packing", micro_batch_size=1, grad_accum=1, world_size=1,
        seed=0, epoch=0, capacity=256, strategy="ffd",
    )  # fmt: skip
    assert by_samples.steps == len(regroup(plan, "samples", 8)) < by_rows.steps == len(plan)
    assert by_samples.real_tokens == by_rows.real_tokens  # same micro-batches, fewer steps
    padded = epoch_estimate(pieces, targets, batching("padding", capacity=256), **kw | {
        "micro_batch_size": 8})  # fmt: skip
    assert abs(by_samples.steps - padded.steps) <= 0.2 * padded.steps  # ~8 samples per step


def test_train_flops_by_hand():
    tiny = resolve_shape("tiny", 64, 2)
    body = tiny.num_params() - 2 * 259 * 64
    assert (
        train_flops(tiny, 1000, 300, 5000.0)
        == 6 * body * 1000 + 6 * 259 * 64 * 300 + 6 * 2 * 64 * 5000
    )


def test_cli_memory_only_for_the_8b_preset(capsys):
    assert main(["experiment=paper_llama3_8b", "--no-data"]) == 0
    out = capsys.readouterr().out
    assert "meta-llama/Meta-Llama-3-8B: 8.030 B params" in out
    assert "32 GPU(s), engine deepspeed, ZeRO stage 3" in out and "global batch 128" in out
    weights_gib = f"{P8 * 2 / 32 / 2**30:.1f}"
    assert any(
        line.split("│")[1].strip() == "weights" and weights_gib in line
        for line in out.splitlines()
        if line.count("│") > 2
    )
    assert "skipped (--no-data)" in out


def test_cli_counts_steps_from_real_token_lengths(capsys):
    from sft.config import DataConfig
    from sft.data.dataset import prepare_data
    from sft.models.tiny import build_tiny_tokenizer

    args = [
        "model=tiny",
        "data=demo",
        "data.demo_size=60",
        "data.max_length=512",
        "data.max_bad_fraction=0.5",
        "collator=packing",
        "train.micro_batch_size=2",
    ]
    assert main(args + ["--gpus", "2"]) == 0
    out = capsys.readouterr().out
    data = prepare_data(
        build_tiny_tokenizer(),
        DataConfig(path="", demo_size=60, max_length=512, max_bad_fraction=0.5, val_fraction=0.05),
        progress=False,
    )
    rows = {
        line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
        for line in out.splitlines()
        if line.startswith("│") and "packing" in line or line.startswith("│ padding")
    }
    for label, kind, strategy in (
        ("padding", "padding", "bfd"),
        ("*packing bfd", "packing", "bfd"),
        ("packing next_fit", "packing", "next_fit"),
    ):
        plan = plan_epoch(
            data.train,
            data.tokens.mask,
            kind=kind,
            micro_batch_size=2,
            grad_accum=1,
            world_size=2,
            seed=0,
            epoch=0,
            capacity=512,
            strategy=strategy,
        )
        assert rows[label][1] == f"{len(plan):,}", (label, rows)


def test_cli_lengths_from_a_run_dir(tmp_path, capsys):
    from sft.cli_config import compose

    cfg = compose(
        [
            "model=tiny",
            "data=demo",
            "data.demo_size=40",
            "data.max_length=512",
            "data.max_bad_fraction=0.5",
            f"run_dir={tmp_path}",
        ]
    )
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    assert main(["experiment=paper_llama3_8b", "--lengths-from", str(tmp_path), "--gpus", "2"]) == 0
    out = capsys.readouterr().out
    assert "Optimizer steps per epoch" in out and "samples" in out
    assert "packing random_concat" in out


def test_cli_bad_input_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["model=hf", "model.name_or_path=nobody/no-such-model-xyz", "--no-data"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        "error: no shape for model.name_or_path=nobody/no-such-model-xyz"
    )
