"""configs/experiment presets compose with every collator/strategy and carry the paper's recipe."""

from __future__ import annotations

from pathlib import Path

import pytest

from sft.cli_config import compose_job
from sft.data.packing import PackStrategy

ROOT = Path(__file__).resolve().parents[2]
PRESETS = sorted(p.stem for p in (ROOT / "configs" / "experiment").glob("*.yaml"))
PAPER = {
    # name: (hub id, epochs, per-device batch, distributed, global batch on 32 GPUs)
    "paper_llama3_8b": ("meta-llama/Meta-Llama-3-8B", 4, 2, "zero3", 128),
    "paper_llama3_70b": ("meta-llama/Meta-Llama-3-70B", 3, 1, "zero3_offload", 64),
}


def _job(*overrides: str):
    cfg, _ = compose_job([*overrides, "run_dir=/tmp/unused"])
    return cfg


def test_the_paper_presets_exist():
    assert set(PAPER) <= set(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize(
    "collator",
    [
        "collator=padding",
        "collator=padding_free",
        *[f"collator=packing collator.strategy={s}" for s in PackStrategy.values()],
    ],
)
def test_every_preset_composes_with_every_collator(preset, collator):
    cfg = _job(f"experiment={preset}", *collator.split())
    assert cfg.collator.name == collator.split()[0].split("=")[1]
    if cfg.collator.name == "packing":
        assert cfg.collator.strategy == collator.split()[1].split("=")[1]
    name = cfg.distributed.name  # auto follows whichever accelerate config is launched
    assert name == "auto" or (ROOT / "launch" / "accelerate" / f"{name}.yaml").is_file()


@pytest.mark.parametrize("preset", sorted(PAPER))
def test_paper_recipe(preset):
    hub_id, epochs, batch, distributed, global_batch = PAPER[preset]
    cfg = _job(f"experiment={preset}")
    assert cfg.experiment == preset
    assert cfg.model.name_or_path == hub_id and cfg.model.dtype == "bf16"
    assert (cfg.optim.lr, cfg.optim.schedule, cfg.optim.warmup_ratio) == (1e-5, "cosine", 0.2)
    assert cfg.data.max_length == 4096
    packed = _job(f"experiment={preset}", "collator=packing")
    assert packed.collator.build(packed.data.max_length).capacity == 4096
    assert (cfg.train.epochs, cfg.train.micro_batch_size, cfg.train.max_steps) == (
        epochs,
        batch,
        -1,
    )
    assert cfg.distributed.name == distributed and cfg.distributed.zero_stage == 3
    assert cfg.distributed.expect_processes == 32
    assert cfg.train.micro_batch_size * cfg.train.grad_accum * 32 == global_batch
    assert cfg.train.loss_normalization == "token"


@pytest.mark.parametrize("preset", sorted(PAPER))
def test_data_is_a_hub_id_with_a_local_override(preset, tmp_path):
    cfg = _job(f"experiment={preset}")
    assert "/" in cfg.data.path and not Path(cfg.data.path).exists()  # owner/name on the hub
    local = tmp_path / "train.jsonl"
    assert _job(f"experiment={preset}", f"data.path={local}").data.path == str(local)


@pytest.mark.parametrize("preset", sorted(PAPER))
def test_the_planner_knows_the_preset_models_offline(preset):
    from sft.plan_memory import resolve_shape

    shape = resolve_shape(_job(f"experiment={preset}").model.name_or_path)
    assert shape.num_params() > (7e9 if "8b" in preset else 70e9)
