"""`collator.group_by=FIELD` with `collator.group_mode=together|apart` (sft/batching/packing.py):
the plan's rows follow the mode, the ids come from the data rows, the default is unchanged, and
`sft-train` trains with it end to end."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sft.batching import LeakyPackingConfig, PackingConfig
from sft.config import DataConfig
from sft.data.dataset import prepare_data
from sft.data.grouping import GroupMode
from sft.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("gsm8k", "aqua", "qasc", "esnli")


def _pieces(n: int = 3_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(20, 400, n)
    ends = np.cumsum(lengths)
    pieces = np.stack([np.arange(n), ends - lengths, ends], axis=1).astype(np.int64)
    return pieces, rng.integers(0, len(SOURCES), n)


def _plan(packing, pieces, groups):
    targets = np.zeros(int(pieces[-1, 2]), dtype=np.int32)  # every token trains
    return packing.plan(
        pieces, targets, micro_batch_size=2, grad_accum=1, world_size=1, seed=0, epoch=0,
        groups=groups,
    )  # fmt: skip


def _rows(plan):
    return [row for step in plan.steps for rank in step for mb in rank for row in mb]


@pytest.mark.parametrize("strategy", ["bfd", "ffd", "first_fit_shuffle", "next_fit"])
def test_plan_rows_follow_the_group_mode(strategy):
    pieces, groups = _pieces()
    plain = _plan(PackingConfig(strategy=strategy).build(1024), pieces, None)
    for mode in GroupMode.values():
        packing = PackingConfig(strategy=strategy, group_by="source", group_mode=mode).build(1024)
        plan = _plan(packing, pieces, groups)
        rows = _rows(plan)
        placed = sorted(p for row in rows for _, _, p in row)
        assert placed == list(range(len(pieces)))  # none lost, none twice
        stats = packing.group_stats(rows, groups)
        if mode == "together":
            assert stats["mixed_packs"] == 0
        else:  # apart: the ungrouped plan's rows, hence its efficiency and steps
            assert stats["mixed_fraction"] >= 0.97
            assert len(plan) == len(plain) and plan.pack_efficiency == plain.pack_efficiency
        print(strategy, mode, len(plan), f"{plan.pack_efficiency:.4f}", stats)


@pytest.mark.parametrize("mode", GroupMode.values())
def test_random_concat_takes_the_option(mode):
    pieces, groups = _pieces()
    packing = PackingConfig(strategy="random_concat", group_by="source", group_mode=mode).build(
        1024
    )
    plan = _plan(packing, pieces, groups)
    rows = _rows(plan)
    segments = sorted((a, b) for row in rows for a, b, _ in row)
    assert all(b0 <= a1 for (_, b0), (a1, _) in itertools.pairwise(segments))  # no token twice
    missing = int(pieces[-1, 2]) - sum(b - a for a, b in segments)
    assert missing == 0 or plan.dropped_fragments > 0  # only counted target-less fragments
    stats = packing.group_stats(rows, groups)
    assert stats["mixed_packs"] == 0 if mode == "together" else stats["mixed_fraction"] >= 0.97


def test_no_grouping_is_the_default_and_describes_as_before():
    packing = PackingConfig().build(512)
    assert packing.group_by == ""
    assert packing.describe() == {
        "collator": "packing",
        "strategy": "bfd",
        "capacity": 512,
        "label": "greedy packing",
    }
    grouped = PackingConfig(group_by="source", group_mode="apart").build(512).describe()
    assert grouped["group_by"] == "source" and grouped["group_mode"] == "apart"
    assert grouped["label"] == "greedy packing, apart by source"
    leaky = LeakyPackingConfig(group_by="source").build(512).describe()
    assert leaky["label"] == "leaky packing, together by source"


def test_group_by_without_group_ids_is_refused():
    pieces, _ = _pieces(50)
    with pytest.raises(UserError, match="collator.group_by=source: the data carry no group ids"):
        _plan(PackingConfig(group_by="source").build(1024), pieces, None)


def _conv(q: str, a: str, **extra) -> dict:
    msgs = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return {**extra, "messages": msgs}


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_prepare_data_carries_the_field_per_training_piece(tiny_tokenizer, tmp_path):
    rows = [_conv(f"q{i}", "a" * (i + 1), source=SOURCES[i % 3]) for i in range(30)]
    path = _write(tmp_path / "d.jsonl", rows)
    cfg = DataConfig(path=str(path), max_length=256, val_fraction=0.2)
    d = prepare_data(tiny_tokenizer, cfg, progress=False, group_by="source")
    assert d.groups is not None and len(d.groups) == len(d.train) == 24
    assert d.group_names == list(SOURCES[:3])
    for (r, _, _), gid in zip(d.train, d.groups):
        line = int(d.tokens.row_ids[r].rsplit(":", 1)[1])  # file:line, 1-based
        assert d.group_names[gid] == SOURCES[(line - 1) % 3]
    assert prepare_data(tiny_tokenizer, cfg, progress=False).groups is None  # default: none


def test_a_row_without_the_field_names_file_and_line(tiny_tokenizer, tmp_path):
    rows = [_conv("q", "a", source="gsm8k"), _conv("q", "a", source="aqua"), _conv("q", "a")]
    path = _write(tmp_path / "d.jsonl", rows)
    with pytest.raises(UserError) as e:
        prepare_data(tiny_tokenizer, DataConfig(path=str(path)), progress=False, group_by="source")
    assert str(e.value).startswith(f"{path}:3: row has no field 'source' for collator.group_by")
    assert "\n" not in str(e.value)


def _cli(tool: str, args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).parent / tool), *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        timeout=timeout,
    )


def test_group_by_under_padding_is_one_line(tmp_path):
    proc = _cli(
        "sft-train",
        ["model=tiny", "data=demo", "collator=padding", "collator.group_by=source",
         f"run_dir={tmp_path / 'r'}"],
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: collator.group_by is not a key of collator=padding; it belongs to "
        "collator=packing or collator=leaky_packing"
    )
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("mode", GroupMode.values())
def test_sft_train_packs_by_the_field_end_to_end(tmp_path, mode):
    rng = np.random.default_rng(0)
    rows = [
        _conv(" ".join(["word"] * int(rng.integers(2, 40))), f"{SOURCES[i % 4]} answer {i}",
              source=SOURCES[i % 4])
        for i in range(96)
    ]  # fmt: skip
    data = _write(tmp_path / "flan.jsonl", rows)
    run_dir = tmp_path / "run"
    common = [
        "model=tiny", "data=file", f"data.path={data}", "data.max_length=256",
        "collator=packing", "collator.group_by=source", f"collator.group_mode={mode}",
    ]  # fmt: skip
    proc = _cli("sft-train", [*common, "train.max_steps=2", "train.progress=false",
                              f"run_dir={run_dir}"])  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["batching"]["group_by"] == "source"
    assert summary["batching"]["group_mode"] == mode
    assert summary["steps"] == 2 and summary["pack_efficiency"] > 0

    # the plan that run trained on, rebuilt from its config.yaml as the trainer builds it
    from sft.config import job_config_from_yaml
    from sft.models.tiny import build_tiny_tokenizer

    cfg = job_config_from_yaml(run_dir / "config.yaml")
    batching = cfg.collator.build(cfg.data.max_length)
    d = prepare_data(build_tiny_tokenizer(), cfg.data, cfg.seed, progress=False, group_by="source")
    plan = batching.plan(
        d.train, d.tokens.targets, micro_batch_size=cfg.train.micro_batch_size,
        grad_accum=cfg.train.grad_accum, world_size=1, seed=cfg.seed, epoch=0, groups=d.groups,
    )  # fmt: skip
    assert summary["steps_per_epoch"] == len(plan)
    stats = batching.group_stats(_rows(plan), d.groups)
    if mode == "together":
        assert stats["mixed_packs"] == 0
    else:
        assert stats["mixed_fraction"] >= 0.9

    # sft-data stats reports efficiency, mixing and steps for no grouping, together and apart
    out = _cli("sft-data", ["stats", "--json", *common, f"run_dir={tmp_path / 'x'}"])
    assert out.returncode == 0, out.stderr[-2000:]
    grouping = json.loads(out.stdout)["grouping"]
    assert grouping["groups"] == 4 and set(grouping["modes"]) == {"none", "together", "apart"}
    modes = grouping["modes"]
    assert modes["together"]["mixed_packs"] == 0
    assert modes["apart"]["mixed_fraction"] >= modes["none"]["mixed_fraction"]
    assert modes["apart"]["efficiency"] == modes["none"]["efficiency"]
    assert all(m["steps_per_epoch"] >= 1 and 0 < m["efficiency"] <= 1 for m in modes.values())


def test_group_mode_apart_without_group_by_is_refused():
    with pytest.raises(
        UserError, match="group_mode=apart groups nothing without collator.group_by"
    ):
        PackingConfig(group_mode="apart")
    with pytest.raises(UserError, match="group_mode=apart groups nothing"):
        LeakyPackingConfig(group_mode="apart")
    assert PackingConfig(group_by="source", group_mode="apart").group_mode == "apart"
