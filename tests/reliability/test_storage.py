"""A full disk or a read-only run_dir: one line, exit 74, the last committed checkpoint intact.

Real file systems, not fakes: a 3 MiB tmpfs (one tiny-model checkpoint is ~1.4 MB, so the third
save runs out of space half-way) and a tmpfs remounted read-only. Needs root (CI and the
developer machines run as root); skipped elsewhere.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from sft import checkpoint as ckpt

from .conftest import TINY, run_train

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root"),
]


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], check=False
    ).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_during_a_checkpoint_is_one_line_exit_74_and_the_last_one_is_intact(small_disk):
    run = small_disk / "run"
    r = run_train(run, *TINY, "train.max_steps=6", "train.save_every=2", "train.report_to=none")
    assert r.returncode == 74, (r.returncode, r.stderr[-3000:])
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no space left on the device" in errors[0], r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    for step in (2, 4):  # committed before: untouched
        assert ckpt.verify(run / "checkpoints" / f"step-{step}") is None
    assert not list((run / "checkpoints").glob(".tmp-*"))  # the half-written save is freed
    summary = json.loads((run / "summary.json").read_text())
    assert summary["exit_code"] == 74 and summary["steps"] == 6


def test_a_read_only_run_dir_is_one_line_before_anything_runs(small_disk):
    (small_disk / "run").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    r = run_train(small_disk / "run", *TINY, "train.max_steps=2")
    assert r.returncode == 74, r.stderr[-3000:]
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "the file system is read-only" in errors[0]
    assert "Traceback" not in r.stderr
