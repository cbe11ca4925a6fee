"""Resume compares the whole training config: a change is refused naming the keys, unless allowed.

The run (tiny model, 4 steps, checkpoints at 2 and 4) is cut back to its step-2 checkpoint and
rerun with another learning rate: refused in one line naming optim.lr, with nothing trained; with
train.allow_config_change=true it resumes, the new lr is in force from step 3, and summary.json
records the change.
"""

from __future__ import annotations

import json
import shutil

import pytest

from .conftest import TINY, rows, run_train

pytestmark = pytest.mark.slow
BASE = [*TINY, "train.max_steps=4", "train.save_every=2", "optim.schedule=constant"]


def _cut_back_to_step_2(run):
    shutil.rmtree(run / "checkpoints" / "step-4")
    shutil.rmtree(run / "final")
    (run / "summary.json").unlink()


def test_a_changed_lr_is_refused_naming_the_key_then_allowed_and_recorded(tmp_path):
    run = tmp_path / "run"
    assert run_train(run, *BASE).returncode == 0
    _cut_back_to_step_2(run)
    r = run_train(run, *BASE, "optim.lr=2e-3")
    assert r.returncode == 2, r.stderr[-2000:]
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert (
        len(errors) == 1
        and "the config changed since it was written (optim.lr 0.001 -> 0.002)" in errors[0]
    )
    assert "train.allow_config_change=true" in errors[0] and "Traceback" not in r.stderr
    assert not (run / "summary.json").exists()  # nothing trained, nothing written
    r = run_train(run, *BASE, "optim.lr=2e-3", "train.allow_config_change=true")
    assert r.returncode == 0, r.stderr[-2000:]
    lrs = {row["step"]: row["lr"] for row in rows(run) if "lr" in row}
    assert lrs[1] == lrs[2] == pytest.approx(1e-3) and lrs[3] == lrs[4] == pytest.approx(2e-3)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["config_changes_on_resume"] == ["optim.lr 0.001 -> 0.002"]


def test_values_that_do_not_change_training_may_change(tmp_path):
    run = tmp_path / "run"
    assert run_train(run, *BASE).returncode == 0
    _cut_back_to_step_2(run)
    r = run_train(run, *BASE, "train.log_every=2", "train.keep_last=5")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((run / "summary.json").read_text())["config_changes_on_resume"] == []


def test_a_checkpoint_from_before_a_key_existed_resumes_while_the_key_holds_its_default(tmp_path):
    run = tmp_path / "run"
    assert run_train(run, *BASE).returncode == 0
    _cut_back_to_step_2(run)
    manifest = run / "checkpoints" / "step-2" / "manifest.json"
    man = json.loads(manifest.read_text())
    del man["compat"]["config"]["optim.weight_decay"]  # written before the key existed
    del man["compat"]["config_defaults"]  # nor did the defaults' record
    manifest.write_text(json.dumps(man))
    r = run_train(run, *BASE, "optim.weight_decay=0.1")  # not the default: a change
    assert r.returncode == 2 and "optim.weight_decay None -> 0.1" in r.stderr, r.stderr[-2000:]
    r = run_train(run, *BASE)  # its default: what the run did before the key existed
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resumed from" in r.stdout and "changed config" not in r.stdout
    assert json.loads((run / "summary.json").read_text())["config_changes_on_resume"] == []
