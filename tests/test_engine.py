"""sft/engine.py's ending of a run: close_distributed's cleanup, end_process's exit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from sft import engine as engine_mod
from sft.engine import close_distributed, end_process

ROOT = Path(__file__).resolve().parents[1]


def test_a_failing_release_is_one_warning_and_the_trackers_still_end(capsys):
    ended = []

    def free_memory():
        raise RuntimeError("engine half-built")

    acc = SimpleNamespace(free_memory=free_memory, end_training=lambda: ended.append(True))
    close_distributed(SimpleNamespace(accelerator=acc))
    assert ended == [True]
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["[sft] warning: releasing the engine failed: RuntimeError('engine half-built')"]


def test_a_single_process_exits_normally(monkeypatch):
    monkeypatch.setattr(engine_mod, "_GROUPS_LIVED", [False])
    with pytest.raises(SystemExit) as e:
        end_process(3)
    assert e.value.code == 3


def test_after_a_multi_process_group_the_exit_skips_shutdown_but_flushes_output(tmp_path):
    script = (
        "import atexit, sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from sft import engine\n"
        "atexit.register(lambda: print('SHUTDOWN RAN'))\n"
        "engine._GROUPS_LIVED[0] = True\n"
        "print('last line', end='')  # buffered: no newline, no flush\n"
        "engine.end_process(75)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 75
    assert proc.stdout == "last line"  # flushed, and no interpreter shutdown ran after it
