"""Run outputs other tools read: metrics.jsonl and the progress line (or bar).

Only rank 0 writes. Each `log()` appends one JSON object per line and flushes, so a killed run
keeps every line it logged; non-finite values are written as strings ("nan", "inf"), never
dropped, so a bad step stays visible. The same line then goes to the experiment trackers
(`track`, from sft/trackers.py: TensorBoard, W&B, MLflow through Accelerate).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


class MetricsWriter:
    def __init__(
        self,
        run_dir: Path,
        enabled: bool,
        track: Callable[[dict], None] | None = None,
        progress_total: int = 0,
        progress: bool = True,
        initial_step: int = 0,
    ) -> None:
        self.enabled = enabled
        self.total = progress_total  # off a terminal: a line every 10 s and at the last step
        self.path = run_dir / "metrics.jsonl"
        self.track = track
        self.bar = None
        self.task = None
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        self.file = open(self.path, "a")  # noqa: SIM115 - held open for the run, closed in close()
        if progress and sys.stderr.isatty():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
                transient=False,
            )
            self.task = self.bar.add_task(
                "train", total=progress_total, completed=initial_step, info=""
            )
            self.bar.start()
        self._last_print = 0.0

    def log(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps({k: _clean(v) for k, v in row.items()}) + "\n")
        self.file.flush()
        if self.track is not None:
            self.track(row)
        if "loss" in row:
            info = f"loss {row['loss']:.4f}  {row.get('tokens_per_s', 0):,.0f} tok/s"
            if self.bar is not None:
                self.bar.update(self.task, completed=row["step"], info=info)
            elif time.time() - self._last_print > 10 or row["step"] >= self.total:
                print(f"[sft] step {row['step']}: {info}", flush=True)
                self._last_print = time.time()
        elif "eval_loss" in row:
            print(f"[sft] step {row['step']}: eval_loss {row['eval_loss']:.4f}", flush=True)

    def close(self) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.stop()
        self.file.close()
