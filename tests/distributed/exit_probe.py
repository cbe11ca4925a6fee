"""Launched by the clean-exit tests: `sft-train` itself, plus a record of interpreter shutdown.

    accelerate launch ... tests/distributed/exit_probe.py OUT_DIR OVERRIDES...

Registers an atexit handler that, if Python's own shutdown ever starts, writes the names of the
process's live OS threads to OUT_DIR/shutdown_rank<R>.json; then runs `sft.train.main` exactly as
the `sft-train` command does. A multi-process run must never enter that shutdown with a
communication thread (gloo's, NCCL's) alive: torn down by the finaliser, they can abort a
finished run.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def record_threads(out: Path) -> None:
    tasks = Path("/proc/self/task")
    names = sorted((t / "comm").read_text().strip() for t in tasks.iterdir())
    rank = os.environ.get("RANK", "0")
    (out / f"shutdown_rank{rank}.json").write_text(json.dumps(names))


if __name__ == "__main__":
    out_dir = Path(sys.argv[1])
    atexit.register(record_threads, out_dir)
    sys.argv = ["sft-train", *sys.argv[2:]]
    from sft.train import main

    main()
