"""Atomic checkpoints: a directory is either complete (valid manifest) or ignored.

    checkpoints/.tmp-step-N/   every rank writes its part: accelerate `save_state` (model as
                               safetensors, optimizer, engine shards) and rng_state_<rank>.json
    -> barrier -> rank 0 writes trainer_state.json (step, data position, scheduler, totals),
       config.yaml, then manifest.json LAST (step, world size, config hash, compat, the size and
       sha256 of every file)
    -> fsync, rename to checkpoints/step-N (atomic on one filesystem), fsync the parent
    -> only now: prune (keep_last), drop invalid leftovers and steps of an abandoned timeline

Invariant: `latest_checkpoint()` only returns directories named step-N whose manifest exists and
whose files all exist with the recorded sizes (with `verify=True`: and the recorded sha256, so
a damaged byte is caught; a checkpoint that fails is skipped, naming it and the file, and the
previous one is used); stale `.tmp-*` directories are removed at start;
retention deletes old checkpoints only after the new one is committed; a checkpoint written
under another world size / batch / model / data is refused before anything is loaded.

Nothing here is unpickled: trainer state, scheduler state and RNG states are JSON; the model is
safetensors; Accelerate loads the optimizer (and its own RNG copy) with `weights_only=True`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sft.errors import UserError

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
STATE = "trainer_state.json"
SECRET_ENV = re.compile(r"TOKEN|SECRET|PASSWORD|API_KEY|ACCESS_KEY|PRIVATE_KEY", re.IGNORECASE)


def config_hash(resolved_yaml: str) -> str:
    return hashlib.sha256(resolved_yaml.encode()).hexdigest()[:16]


def fingerprint(*parts: Any) -> str:
    """A short hash of arrays (by bytes) and JSON-able values: identifies data or model shapes."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.tobytes() if isinstance(part, np.ndarray) else json.dumps(part).encode())
    return h.hexdigest()[:16]


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
        return bool(data["files"]) and all(
            (ckpt / rel).is_file() and (ckpt / rel).stat().st_size == size
            for rel, size in data["files"].items()
        )
    except (ValueError, KeyError, OSError, AttributeError):
        return False


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_files(paths: list[Path]) -> list[str]:
    """sha256 of several files at once (hashlib releases the GIL: one thread per core)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        return list(pool.map(sha256_file, paths))


def verify(ckpt: Path) -> str | None:
    """None when every file of the manifest has its recorded size and sha256; else the problem."""
    man = ckpt / MANIFEST
    try:
        data = json.loads(man.read_text())
        files, sums = data["files"], data.get("sha256")
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"no readable manifest ({type(e).__name__})"
    if not files:
        return "its manifest lists no file"
    for rel, size in files.items():
        f = ckpt / rel
        if not f.is_file():
            return f"{rel} is missing"
        if f.stat().st_size != size:
            return f"{rel} has {f.stat().st_size} bytes, the manifest says {size}"
    if sums is not None:
        names = list(files)
        for rel, digest in zip(names, sha256_files([ckpt / r for r in names])):
            if digest != sums.get(rel):
                return f"{rel} does not match its sha256 (damaged)"
    return None


def list_checkpoints(ckpt_root: Path) -> list[Path]:
    """Committed step-N directories, oldest first (validity not checked)."""
    if not ckpt_root.is_dir():
        return []
    found = [
        p
        for p in ckpt_root.iterdir()
        if p.is_dir() and p.name.startswith("step-") and p.name[5:].isdigit()
    ]
    return sorted(found, key=step_of)


def latest_checkpoint(ckpt_root: Path, verify_sums: bool = False) -> Path | None:
    """The newest valid checkpoint; invalid (truncated, manifest-less, with `verify_sums`: also
    damaged) ones are skipped with a line naming them and what is wrong."""
    for p in reversed(list_checkpoints(ckpt_root)):
        problem = verify(p) if verify_sums else (None if is_valid(p) else "incomplete")
        if problem is None:
            return p
        print(f"[sft] skipping checkpoint {p}: {problem}; trying the previous one", flush=True)
    return None


def remove_stale(ckpt_root: Path) -> list[Path]:
    """Delete half-written `.tmp-*` directories left by a killed run (rank 0, at start)."""
    stale = [p for p in ckpt_root.glob(".tmp-*")] if ckpt_root.is_dir() else []
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return stale


# ------------------------------------------------------------------------------------- RNG
def capture_rng() -> dict:
    """Every RNG this process draws from (python, numpy, torch CPU, CUDA), as plain JSON."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(mt), gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng(state: dict) -> None:
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def _rng_file(rank: int) -> str:
    return f"rng_state_{rank}.json"


# ------------------------------------------------------------------------------------- save
def save_checkpoint(
    accelerator,
    ckpt_root: Path,
    step: int,
    state: dict,
    config_yaml: str,
    keep_last: int,
    compat: dict | None = None,
    extra: Callable[[Path], None] | None = None,
) -> Path:
    """Collective: every rank calls it. Returns the committed directory (see the module docstring)."""
    final = ckpt_root / f"step-{step}"
    tmp = ckpt_root / f".tmp-step-{step}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    _write_json(tmp / _rng_file(accelerator.process_index), capture_rng())
    if extra is not None:  # collective (e.g. an HF export of gathered weights), before the manifest
        extra(tmp)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _write_json(tmp / STATE, state)
        (tmp / "config.yaml").write_text(config_yaml)
        paths = [p for p in sorted(tmp.rglob("*")) if p.is_file()]
        files = {str(p.relative_to(tmp)): p.stat().st_size for p in paths}
        sums = dict(zip((str(p.relative_to(tmp)) for p in paths), sha256_files(paths)))
        _write_json(
            tmp / MANIFEST,
            {
                "step": step,
                "world_size": accelerator.num_processes,
                "config_hash": config_hash(config_yaml),
                "compat": compat or {},
                "files": files,
                "sha256": sums,
            },
        )
        _fsync_dir(tmp)
        if final.exists():  # a previous attempt committed this step already: replace it
            shutil.rmtree(final)
        tmp.rename(final)
        _fsync_dir(ckpt_root)
        prune(ckpt_root, step, keep_last)
    accelerator.wait_for_everyone()
    return final


def prune(ckpt_root: Path, step: int, keep_last: int) -> list[Path]:
    """After step-`step` is committed: keep it and the newest keep_last-1 valid older ones.

    Also removes invalid older directories and any step above `step` (a timeline abandoned by
    resuming from an earlier checkpoint), so `latest` can never jump back onto it.
    """
    removed = []
    older_valid = []
    for p in list_checkpoints(ckpt_root):
        s = step_of(p)
        if s > step or (s < step and not is_valid(p)):
            removed.append(p)
        elif s < step:
            older_valid.append(p)
    if keep_last > 0:
        removed += older_valid[: max(0, len(older_valid) - (keep_last - 1))]
    for p in removed:
        log.info("removing checkpoint %s", p)
        shutil.rmtree(p, ignore_errors=True)
    return removed


# ------------------------------------------------------------------------------------- load
def read_manifest(ckpt: Path) -> dict:
    return json.loads((ckpt / MANIFEST).read_text())


def config_changes(saved: dict, current: dict, defaults: dict | None = None) -> list[str]:
    """`key old -> new` for every training-relevant config value that differs. A key the saved
    config lacks (the checkpoint predates it) is unchanged while it holds its default: a new
    key's default keeps the behaviour from before it existed."""
    defaults = defaults or {}
    keys = sorted(set(saved) | set(current))
    return [
        f"{k} {saved.get(k)!r} -> {current.get(k)!r}"
        for k in keys
        if saved.get(k) != current.get(k)
        and not (k not in saved and k in defaults and current.get(k) == defaults[k])
    ]


def check_compatible(
    ckpt: Path, saved: dict, current: dict, allow_changes: bool = False
) -> list[str]:
    """Refuse (one line) a checkpoint written under a different world size, batch, model or data,
    or under another training config unless `allow_changes`; returns the config changes."""
    for key, value in current.items():
        if key in ("config", "config_defaults"):
            continue
        if key in saved and saved[key] != value:
            raise UserError(
                f"cannot resume from {ckpt}: it was written with {key}={saved[key]!r} but this run "
                f"has {key}={value!r}; rerun with the same setting, or use a new run_dir "
                "(or train.resume_from=none)"
            )
    defaults = current.get("config_defaults")
    changes = (
        config_changes(saved["config"], current["config"], defaults) if "config" in saved else []
    )
    if changes and not allow_changes:
        raise UserError(
            f"cannot resume from {ckpt}: the config changed since it was written ("
            + "; ".join(changes)
            + "); rerun with the checkpoint's values, or add train.allow_config_change=true to "
            "resume with the new ones (the change is recorded in summary.json)"
        )
    return changes


def load_checkpoint(
    accelerator, ckpt: Path, compat: dict, allow_changes: bool = False
) -> tuple[dict, list[str]]:
    """Check compatibility, then restore model/optimizer/RNG (collective); return the trainer
    state and the config changes accepted with `allow_changes`."""
    man = read_manifest(ckpt)
    saved = {"world_size": man["world_size"], **man.get("compat", {})}
    changes = check_compatible(ckpt, saved, compat, allow_changes)
    accelerator.load_state(str(ckpt))
    restore_rng(json.loads((ckpt / _rng_file(accelerator.process_index)).read_text()))
    return json.loads((ckpt / STATE).read_text()), changes


# ------------------------------------------------------------------------------------- run files
def truncate_step_log(path: Path, keep_through_step: int) -> int:
    """Drop the lines of a JSONL step log whose "step" is above `keep_through_step`.

    A killed run may have logged steps after its last checkpoint; the resumed run logs them
    again, so after truncation every step appears exactly once. Returns the lines dropped.
    """
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            step = json.loads(line).get("step", 0)
        except ValueError:  # a line cut by the kill
            dropped += 1
            continue
        if step <= keep_through_step:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        tmp = path.with_suffix(path.suffix + ".part")
        tmp.write_text("".join(k + "\n" for k in kept))
        tmp.replace(path)
    return dropped


def secret_values(environ: dict | None = None) -> dict[str, str]:
    """Values of environment variables that look like credentials (W&B key, hub tokens, ...)."""
    env = os.environ if environ is None else environ
    return {k: v for k, v in env.items() if SECRET_ENV.search(k) and len(v) >= 8}


def redact_secrets(text: str, environ: dict | None = None) -> str:
    """`text` with every credential value from the environment replaced by `<redacted:NAME>`."""
    for name, value in sorted(secret_values(environ).items(), key=lambda kv: -len(kv[1])):
        text = text.replace(value, f"<redacted:{name}>")
    return text
