"""sft/checkpoint.py without a model: a fake accelerator writes a few files, the rest is real."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from sft import checkpoint as ckpt
from sft.errors import UserError


class FakeAccelerator:
    """What save_checkpoint/load_checkpoint use of Accelerate; `fail_save` simulates a crash mid-write."""

    is_main_process = True
    num_processes = 1
    process_index = 0

    def __init__(self, fail_save: bool = False) -> None:
        self.fail_save = fail_save
        self.loaded: list[str] = []

    def wait_for_everyone(self) -> None:
        pass

    def save_state(self, path: str, safe_serialization: bool = True) -> None:
        (Path(path) / "model.safetensors").write_bytes(b"w" * 100)
        if self.fail_save:
            raise KeyboardInterrupt("killed while writing")
        (Path(path) / "optimizer.bin").write_bytes(b"o" * 50)

    def load_state(self, path: str) -> None:
        self.loaded.append(path)


def save(root: Path, step: int, keep_last: int = 0, compat: dict | None = None, acc=None) -> Path:
    state = {"step": step, "epoch": 0, "step_in_epoch": step, "totals": {}, "scheduler": {}}
    return ckpt.save_checkpoint(
        acc or FakeAccelerator(),
        root,
        step,
        state,
        "a: 1\n",
        keep_last,
        compat or {"micro_batch_size": 2},
    )


def test_commit_is_atomic_and_lists_every_file(tmp_path):
    d = save(tmp_path, 3)
    man = json.loads((d / ckpt.MANIFEST).read_text())
    assert d.name == "step-3" and ckpt.is_valid(d)
    assert (
        man["step"] == 3
        and man["world_size"] == 1
        and man["config_hash"] == ckpt.config_hash("a: 1\n")
    )
    on_disk = {str(p.relative_to(d)) for p in d.rglob("*") if p.is_file()} - {ckpt.MANIFEST}
    assert set(man["files"]) == on_disk
    assert {
        "model.safetensors",
        "optimizer.bin",
        "rng_state_0.json",
        ckpt.STATE,
        "config.yaml",
    } <= on_disk
    assert not list(tmp_path.glob(".tmp-*"))


def test_crash_during_save_leaves_previous_checkpoints_and_no_step_dir(tmp_path):
    save(tmp_path, 2, keep_last=1)
    with pytest.raises(KeyboardInterrupt):
        save(tmp_path, 4, keep_last=1, acc=FakeAccelerator(fail_save=True))
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == [
        "step-2"
    ]  # nothing pruned before commit
    assert ckpt.latest_checkpoint(tmp_path).name == "step-2"
    assert [p.name for p in ckpt.remove_stale(tmp_path)] == [".tmp-step-4"]
    assert not list(tmp_path.glob(".tmp-*"))


@pytest.mark.parametrize("damage", ["truncate", "no_manifest", "missing_file", "bad_manifest"])
def test_damaged_checkpoint_is_skipped_for_the_previous_valid_one(tmp_path, damage):
    save(tmp_path, 2)
    d = save(tmp_path, 4)
    if damage == "truncate":
        (d / "model.safetensors").write_bytes(b"w" * 10)
    elif damage == "no_manifest":
        (d / ckpt.MANIFEST).unlink()
    elif damage == "missing_file":
        (d / "optimizer.bin").unlink()
    else:
        (d / ckpt.MANIFEST).write_text("{not json")
    assert not ckpt.is_valid(d)
    assert ckpt.latest_checkpoint(tmp_path).name == "step-2"


def test_retention_keeps_the_newest_and_drops_an_abandoned_timeline(tmp_path):
    for s in (2, 4, 6):
        save(tmp_path, s, keep_last=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-4", "step-6"]
    # resumed from step-4 (say step-6 was bad): committing step-5 removes the newer step-6
    save(tmp_path, 5, keep_last=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-4", "step-5"]
    assert ckpt.latest_checkpoint(tmp_path).name == "step-5"


def test_keep_last_zero_keeps_everything(tmp_path):
    for s in (1, 2, 3):
        save(tmp_path, s, keep_last=0)
    assert len(ckpt.list_checkpoints(tmp_path)) == 3


def test_incompatible_checkpoint_is_refused_before_loading(tmp_path):
    d = save(tmp_path, 2, compat={"micro_batch_size": 2, "model": "tiny"})
    acc = FakeAccelerator()
    with pytest.raises(UserError) as e:
        ckpt.load_checkpoint(acc, d, {"world_size": 1, "micro_batch_size": 4, "model": "tiny"})
    assert "micro_batch_size=2" in str(e.value) and "micro_batch_size=4" in str(e.value)
    assert "\n" not in str(e.value) and acc.loaded == []
    with pytest.raises(UserError, match="world_size=1"):
        ckpt.load_checkpoint(acc, d, {"world_size": 2, "micro_batch_size": 2, "model": "tiny"})
    state, changes = ckpt.load_checkpoint(
        acc, d, {"world_size": 1, "micro_batch_size": 2, "model": "tiny"}
    )
    assert state["step"] == 2 and acc.loaded == [str(d)] and changes == []


def test_rng_state_round_trips_through_json():
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    state = json.loads(json.dumps(ckpt.capture_rng()))
    expect = (
        torch.rand(4),
        np.random.rand(3),
        random.random(),
        torch.nn.functional.dropout(torch.ones(16), 0.5),
    )
    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    ckpt.restore_rng(state)
    got = (
        torch.rand(4),
        np.random.rand(3),
        random.random(),
        torch.nn.functional.dropout(torch.ones(16), 0.5),
    )
    assert (
        torch.equal(got[0], expect[0]) and np.array_equal(got[1], expect[1]) and got[2] == expect[2]
    )
    assert torch.equal(got[3], expect[3])


def test_load_restores_this_ranks_rng(tmp_path):
    torch.manual_seed(5)
    d = save(tmp_path, 1)
    expect = torch.rand(3)
    torch.manual_seed(6)
    ckpt.load_checkpoint(FakeAccelerator(), d, {})
    assert torch.equal(torch.rand(3), expect)


def test_truncate_step_log_keeps_one_line_per_step(tmp_path):
    p = tmp_path / "metrics.jsonl"
    lines = [{"step": s, "loss": s / 10} for s in range(1, 7)] + [{"step": 4, "eval_loss": 1.0}]
    p.write_text(
        "".join(json.dumps(r) + "\n" for r in lines) + '{"step": 7, "lo'
    )  # cut by the kill
    assert ckpt.truncate_step_log(p, 4) == 3  # steps 5, 6 and the cut line
    kept = [json.loads(x) for x in p.read_text().splitlines()]
    assert [r["step"] for r in kept] == [1, 2, 3, 4, 4]
    assert ckpt.truncate_step_log(p, -1) == 5 and p.read_text() == ""
    assert ckpt.truncate_step_log(tmp_path / "absent.jsonl", 3) == 0


def test_redact_secrets_replaces_credential_values_only():
    env = {
        "WANDB_API_KEY": "wandb-0123456789abcdef",
        "HF_TOKEN": "hf_abcdefghijklmnop",
        "HOME": "/home/someone",
        "SHORT_TOKEN": "abc",
    }
    text = (
        "run_name: hf_abcdefghijklmnop\nkey: wandb-0123456789abcdef\nhome: /home/someone\nx: abc\n"
    )
    out = ckpt.redact_secrets(text, env)
    assert "hf_abcdefghijklmnop" not in out and "wandb-0123456789abcdef" not in out
    assert "<redacted:HF_TOKEN>" in out and "/home/someone" in out and "x: abc" in out


def test_verify_catches_a_changed_byte_of_the_same_size(tmp_path):
    import json

    from sft import checkpoint as ckpt

    d = tmp_path / "step-1"
    d.mkdir()
    (d / "a.bin").write_bytes(b"x" * 1000)
    files = {"a.bin": 1000}
    sums = {"a.bin": ckpt.sha256_file(d / "a.bin")}
    (d / ckpt.MANIFEST).write_text(json.dumps({"files": files, "sha256": sums}))
    assert ckpt.verify(d) is None
    (d / "a.bin").write_bytes(b"x" * 999 + b"y")
    assert ckpt.is_valid(d)  # the size check alone is fooled
    assert ckpt.verify(d) == "a.bin does not match its sha256 (damaged)"
    assert ckpt.latest_checkpoint(tmp_path, verify_sums=True) is None


def test_verify_checkpoint_command(tmp_path):
    import subprocess
    import sys

    from tests.conftest import ROOT

    r = subprocess.run(
        [sys.executable, str(ROOT / "sft" / "train.py"), "--verify-checkpoint", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 2 and r.stderr.startswith(f"error: {tmp_path}: no readable manifest")


def test_config_changes_count_a_key_the_checkpoint_predates_unchanged_at_its_default():
    saved = {"optim.lr": 1e-3}
    current = {"optim.lr": 1e-3, "data.val_seed": -1}
    assert ckpt.config_changes(saved, current) == ["data.val_seed None -> -1"]
    assert ckpt.config_changes(saved, current, {"data.val_seed": -1}) == []
    assert ckpt.config_changes(saved, {**current, "data.val_seed": 3}, {"data.val_seed": -1}) == [
        "data.val_seed None -> 3"
    ]
    # a key the checkpoint has keeps counting, default or not; so does a key removed since
    assert ckpt.config_changes({**saved, "data.val_seed": 3}, current, {"data.val_seed": -1}) == [
        "data.val_seed 3 -> -1"
    ]
    assert ckpt.config_changes({**saved, "x": 1}, {"optim.lr": 1e-3}, {"x": 1}) == ["x 1 -> None"]
