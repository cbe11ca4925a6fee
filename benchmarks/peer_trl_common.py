"""bench_peer_trl.py's shared pieces: the setups, how a sample is identified (a digest of its
token ids and supervised positions), our trainer's overrides per batching, step clocks.
"""

from __future__ import annotations

import hashlib
import resource
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


SETUPS = {
    "ours_padding": {"side": "ours", "kind": "padding", "attn": "sdpa"},
    "trl_padding": {"side": "trl", "kind": "padding", "attn": "sdpa"},
    "ours_packing": {"side": "ours", "kind": "packing", "attn": "varlen"},
    "trl_packing": {"side": "trl", "kind": "packing", "attn": "sdpa"},
    "trl_packing_varlen": {"side": "trl", "kind": "packing", "attn": "varlen"},
}
DEFAULT_SETUPS = ["ours_padding", "trl_padding", "ours_packing", "trl_packing"]
PAIRS = {  # ratio name -> (ours setup, TRL setup)
    "padding": ("ours_padding", "trl_padding"),
    "packing": ("ours_packing", "trl_packing"),
    "packing_varlen": ("ours_packing", "trl_packing_varlen"),
}
DRY = {"model": "tiny", "samples": 4, "batch": 2, "steps": 3, "warmup": 1, "rounds": 1}
DRY_THREADS = 1  # --dry-run without --threads: immune to a second user of the 2 cores
IGNORE = -100
RESULT = ROOT / "benchmarks" / "results" / "peer_trl_cpu.json"


# --------------------------------------------------------------------------- shared helpers


def digest(ids, supervised) -> str:
    """One sample: its token ids and which of its tokens are supervised (are some target)."""
    h = hashlib.sha1(np.asarray(ids, dtype=np.int64).tobytes())
    h.update(np.asarray(supervised, dtype=bool).tobytes())
    return h.hexdigest()[:16]


def overrides_for(job: dict, kind: str) -> list[str]:
    """Our trainer's overrides for one kind of batching (the parent plans with the same ones)."""
    per_kind = {
        "padding": [
            "collator=padding",
            "model.attn_implementation=sdpa",
            f"train.micro_batch_size={job['batch']}",
        ],
        "packing": [
            "collator=packing",
            "collator.strategy=bfd",
            f"collator.pack_length={job['max_length']}",
            "model.attn_implementation=varlen",
            "train.micro_batch_size=1",
        ],
    }
    return [*job["base_overrides"], *per_kind[kind]]


def _step_times(ends: list[tuple[float, float]], start: tuple[float, float]) -> list[tuple]:
    """(wall, cpu) seconds of every step from consecutive step ends; step 1 from `start`."""
    out, prev = [], start
    for end in ends:
        out.append((end[0] - prev[0], end[1] - prev[1]))
        prev = end
    return out


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _value(choice) -> str:
    return str(getattr(choice, "value", choice))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
