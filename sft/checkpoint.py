"""Atomic checkpoints: a directory is either complete (valid manifest) or ignored.

    checkpoints/.tmp-step-N/   every rank writes its part (accelerate save_state: model,
                               optimizer, RNG states of every rank, registered objects)
    -> barrier -> rank 0 writes trainer_state.json, config.yaml, then manifest.json LAST
       (step, world size, config hash, every file with its size), fsync
    -> rename to checkpoints/step-N (atomic on one filesystem) -> prune old ones (keep_last)

Invariant: `latest_checkpoint()` only returns directories named step-N whose manifest exists and
whose files all exist with the recorded sizes; stale `.tmp-*` directories are removed at start;
retention deletes old checkpoints only after the new one is committed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from sft.errors import UserError

MANIFEST = "manifest.json"
STATE = "trainer_state.json"


def config_hash(resolved_yaml: str) -> str:
    return hashlib.sha256(resolved_yaml.encode()).hexdigest()[:16]


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    except OSError:
        pass


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".part")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def step_of(path: Path) -> int:
    return int(path.name.split("-", 1)[1])


def is_valid(ckpt: Path) -> bool:
    """True iff the manifest exists and every listed file exists with its recorded size."""
    man = ckpt / MANIFEST
    if not man.is_file():
        return False
    try:
        data = json.loads(man.read_text())
        return all((ckpt / rel).is_file() and (ckpt / rel).stat().st_size == size
                   for rel, size in data["files"].items())
    except (ValueError, KeyError, OSError):
        return False


def list_checkpoints(ckpt_root: Path) -> list[Path]:
    """Committed step-N directories, oldest first (validity not checked)."""
    if not ckpt_root.is_dir():
        return []
    found = [p for p in ckpt_root.iterdir() if p.is_dir() and p.name.startswith("step-")
             and p.name[5:].isdigit()]
    return sorted(found, key=step_of)


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    for p in reversed(list_checkpoints(ckpt_root)):
        if is_valid(p):
            return p
    return None


def remove_stale(ckpt_root: Path) -> list[Path]:
    """Delete half-written `.tmp-*` directories left by a killed run (rank 0, at start)."""
    stale = [p for p in ckpt_root.glob(".tmp-*")] if ckpt_root.is_dir() else []
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return stale


def save_checkpoint(accelerator, ckpt_root: Path, step: int, state: dict, config_yaml: str,
                    keep_last: int) -> Path:
    """Collective: every rank calls it. Returns the committed directory."""
    final = ckpt_root / f"step-{step}"
    tmp = ckpt_root / f".tmp-step-{step}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _write_json(tmp / STATE, state)
        (tmp / "config.yaml").write_text(config_yaml)
        files = {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
        _write_json(tmp / MANIFEST, {"step": step, "world_size": accelerator.num_processes,
                                     "config_hash": config_hash(config_yaml), "files": files})
        _fsync_dir(tmp)
        if final.exists():  # a previous attempt committed this step already: replace it
            shutil.rmtree(final)
        tmp.rename(final)
        _fsync_dir(ckpt_root)
        if keep_last > 0:
            committed = [p for p in list_checkpoints(ckpt_root) if is_valid(p)]
            for old in committed[:-keep_last]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, ckpt: Path, expect_world_size: int) -> dict:
    """Restore model/optimizer/RNG (collective) and return the trainer state."""
    man = json.loads((ckpt / MANIFEST).read_text())
    if man["world_size"] != expect_world_size:
        raise UserError(
            f"checkpoint {ckpt} was written by {man['world_size']} process(es) but this run has "
            f"{expect_world_size}: resume with the same number of processes, or start a new run_dir")
    accelerator.load_state(str(ckpt))
    return json.loads((ckpt / STATE).read_text())
