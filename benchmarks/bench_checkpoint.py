"""What checksumming costs a checkpoint: a real save of SmolLM2-135M, with and without sha256.

    .venv/bin/python benchmarks/bench_checkpoint.py --json benchmarks/results/checkpoint.json
    # options: --rounds 3 --model smollm2_135m (any model= option; tiny for a quick look)

Builds the trainer's Recipe and trains one step of `model=... data=demo` (so the optimizer holds
its AdamW moments, as in any real checkpoint), then saves the same checkpoint
`--rounds` times with the sha256 sums and `--rounds` times without them (the hashing function
replaced by a stub), interleaved A/B/A/B, and times the verification a resume does. Reports
the median seconds of each, the checkpoint's size, and the checksum share of a save.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2_135m")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", default="")
    ns = ap.parse_args(argv)

    from sft import checkpoint as ckpt
    from sft.cli_config import compose_job
    from sft.trainer import Recipe

    real_sha = ckpt.sha256_files
    with tempfile.TemporaryDirectory() as tmp:
        overrides = [
            f"model={ns.model}", "data=demo", "data.demo_size=64", "train.max_steps=1",
            "train.micro_batch_size=1", "train.keep_last=1", "train.progress=false",
            "train.report_to=none", f"run_dir={tmp}/run",
        ]  # fmt: skip
        cfg, yaml = compose_job(overrides)
        recipe = Recipe(cfg, yaml)
        try:
            assert recipe.train() == 0  # one step: the optimizer state exists
            timings: dict[str, list[float]] = {"with_sha256": [], "without": []}
            for _ in range(ns.rounds):
                for kind in ("with_sha256", "without"):
                    stub = lambda paths: [""] * len(paths)
                    ckpt.sha256_files = real_sha if kind == "with_sha256" else stub
                    t0 = time.perf_counter()
                    recipe.save()
                    timings[kind].append(time.perf_counter() - t0)
            ckpt.sha256_files = real_sha
            recipe.save()  # a checkpoint with real sums, to time what a resume verifies
            path = ckpt.latest_checkpoint(recipe.ckpt_root)
            size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            verify = []
            for _ in range(ns.rounds):
                t0 = time.perf_counter()
                assert ckpt.verify(path) is None
                verify.append(time.perf_counter() - t0)
        finally:
            ckpt.sha256_files = real_sha
            recipe.close()
    with_s = statistics.median(timings["with_sha256"])
    without_s = statistics.median(timings["without"])
    result = {
        "model": ns.model,
        "checkpoint_bytes": size,
        "save_s_with_sha256": with_s,
        "save_s_without": without_s,
        "sha256_overhead_s": with_s - without_s,
        "sha256_share_of_save": (with_s - without_s) / with_s,
        "verify_on_resume_s": statistics.median(verify),
        "rounds": ns.rounds,
        "all_timings_s": timings,
    }
    print(json.dumps(result, indent=2))
    if ns.json:
        Path(ns.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
