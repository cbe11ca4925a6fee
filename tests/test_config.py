"""Every shipped YAML composes against the schema; bad values fail at composition with one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sft.cli_config import CONFIG_DIR, compose_job
from sft.config import JobConfig
from sft.errors import UserError

GROUPS = ["model", "data", "collator", "optim", "distributed"]
BASE = ["run_dir=/tmp/sft-test-compose"]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in _options(g)])
def test_every_group_option_composes(group, option):
    extra = {
        ("model", "hf"): ["model.name_or_path=some/model"],
        ("data", "file"): ["data.path=some/dataset"],
    }.get((group, option), [])
    cfg, yaml = compose_job(BASE + [f"{group}={option}", *extra])
    assert isinstance(cfg, JobConfig)
    assert getattr(cfg, group).name == option
    assert "run_dir: /tmp/sft-test-compose" in yaml


@pytest.mark.parametrize("experiment", _options("experiment"))
def test_every_experiment_composes(experiment):
    extra = []
    cfg, _ = compose_job(BASE + [f"experiment={experiment}", *extra])
    assert cfg.experiment  # presets name themselves


def test_default_is_smollm2_on_demo_with_padding():
    cfg, _ = compose_job(BASE)
    assert (cfg.model.name_or_path, cfg.data.name, cfg.collator.name) == (
        "smollm2",
        "demo",
        "padding",
    )


@pytest.mark.parametrize(
    "override,needle",
    [
        (
            "collator=pack",
            (
                "collator=pack is not an option; choose one of "
                "['leaky_packing', 'packing', 'padding', 'padding_free']"
            ),
        ),
        ("train.max_step=4", "unknown config key 'train.max_step'"),
        ("train.max_steps=four", "train.max_steps='four' is not a valid int"),
        (
            "collator=packing collator.strategy=greedy",
            "collator.strategy='greedy' is not allowed; choose one of",
        ),
        (
            "collator.strategy=ffd",
            (
                "collator.strategy is not a key of collator=padding; it belongs to "
                "collator=packing or collator=leaky_packing"
            ),
        ),
        ("+foo=1", "unknown config key 'foo'"),
        ("data.overlong=cut", "data.overlong='cut' is not allowed"),
        ("model.attn_implementation=flash", "model.attn_implementation='flash' is not allowed"),
        ("train.loss_normalization=mean", "train.loss_normalization='mean' is not allowed"),
        ("train.memory_margin=-0.1", "train.memory_margin must be >= 0"),
        ("data.val_seed=-2", "data.val_seed must be >= 0 (-1 = the run seed)"),
    ],
)
def test_bad_override_is_one_clear_line(override, needle):
    with pytest.raises(UserError) as e:
        compose_job(BASE + override.split())
    msg = str(e.value)
    assert needle in msg
    assert "\n" not in msg


def test_cli_bad_value_prints_one_line_and_exits_2(tmp_path):
    script = Path(__file__).resolve().parents[1] / "sft" / "train.py"
    proc = subprocess.run(
        [sys.executable, str(script), "model=tiny", "collator=nope", f"run_dir={tmp_path}"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert lines == [
        (
            "error: collator=nope is not an option; choose one of "
            "['leaky_packing', 'packing', 'padding', 'padding_free']"
        )
    ]
    assert "Traceback" not in proc.stderr


def test_configuration_doc_is_generated_from_the_dataclasses():
    from sft.config_docs import main

    assert main(["--check"]) == 0, "docs/configuration.md is stale: run `python -m sft.config_docs`"


def test_every_config_field_has_a_docstring():
    import dataclasses

    from sft.batching import BATCHING_CONFIGS
    from sft.config import (
        DataConfig,
        DistributedConfig,
        LoraConfig,
        ModelConfig,
        OptimConfig,
        TrainConfig,
    )
    from sft.config_docs import field_docs

    classes = [ModelConfig, LoraConfig, DataConfig, OptimConfig, DistributedConfig, TrainConfig]
    missing = [
        f"{cls.__name__}.{f.name}"
        for cls in [*classes, *BATCHING_CONFIGS.values()]
        for f in dataclasses.fields(cls)
        if f.name not in field_docs(cls)
    ]
    assert missing == []


def test_unknown_demo_task_is_refused_at_composition(tmp_path):
    from sft.cli_config import compose_job
    from sft.errors import UserError

    with pytest.raises(UserError, match="data.demo_tasks: unknown task"):
        compose_job(["data=demo", "data.demo_tasks=[capitals]", f"run_dir={tmp_path}"])
