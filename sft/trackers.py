"""Experiment trackers through Accelerate's own tracker API: `train.report_to=[tensorboard,wandb,mlflow]`.

    run_dir/tb/<experiment>/   TensorBoard events, hyperparameters in a sub-folder (tensorboard --logdir)
    run_dir/wandb/             the W&B run (offline-run-*/ under WANDB_MODE=offline: `wandb sync` uploads it)
    run_dir/mlflow/mlflow.db   the MLflow store (sqlite), unless MLFLOW_TRACKING_URI names another one

`accelerator_args` gives the Accelerator its `log_with` (after checking each library is installed:
one line, exit 2, before anything loads); `start` opens one tracker run per start of the trainer,
named after the run (project: `experiment`, run: `run_name` or the run_dir's name), with the
resolved config flattened (`train.micro_batch_size: 4`, ...) as its hyperparameters. The trackers'
own environment variables apply (WANDB_MODE, WANDB_ENTITY, MLFLOW_TRACKING_URI, ...).

Invariant: every tracker receives the numeric values of every metrics.jsonl line (train and eval),
under the same keys, at that line's step; metrics.jsonl stays the record other tools read. Only
rank 0 logs (Accelerate runs trackers on the main process) and `accelerator.end_training()` closes
them on every exit path (sft/engine.py `close_distributed`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sft.errors import UserError

TRACKERS = ("tensorboard", "wandb", "mlflow")
OFF = ("none", "")


def tracker_names(value: Any) -> list[str]:
    """`train.report_to` as a list of tracker names: a list, one name, "a,b", or none / [] (off)."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    names: list[str] = []
    for item in (str(i).strip().lower() for i in items):
        if item in OFF:
            continue
        if item not in TRACKERS:
            raise UserError(
                f"train.report_to: unknown tracker {item!r}; choose from {list(TRACKERS)} (or none)"
            )
        if item not in names:
            names.append(item)
    return names


def _shown(report_to: list[str]) -> str:
    return f"[{','.join(report_to)}]"


def _installed(name: str) -> bool:
    from accelerate.utils import is_mlflow_available, is_tensorboard_available, is_wandb_available

    return {
        "tensorboard": is_tensorboard_available,
        "wandb": is_wandb_available,
        "mlflow": is_mlflow_available,
    }[name]()


def accelerator_args(report_to: list[str], run_dir: Path) -> dict:
    """`Accelerator(**...)` keyword arguments for these trackers ({} for none). Refuses, in one
    line, a tracker whose library is missing (Accelerate would silently drop it)."""
    if not report_to:
        return {}
    missing = [n for n in report_to if not _installed(n)]
    if missing:
        raise UserError(
            f"train.report_to={_shown(report_to)} needs {' and '.join(missing)}, not installed: "
            f"pip install 'sft[trackers]' (or drop {missing[0]} from train.report_to)"
        )
    from accelerate.utils import ProjectConfiguration

    project = ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(run_dir / "tb"))
    return {"log_with": list(report_to), "project_config": project}


def flat_config(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{"train.lr": 0.001, ...}: nested keys joined by dots, lists as JSON text (scalars only)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_config(value, name + "."))
        else:
            out[name] = json.dumps(value) if isinstance(value, (list, tuple)) else value
    return out


def tracked_values(row: dict) -> dict[str, float | int]:
    """The numeric values of one metrics.jsonl line, its step left out (logged as the step);
    a dict of numbers (eval_loss_by) becomes one value per key, `eval_loss_by/KEY`."""
    flat = {f"{k}/{n}": x for k, v in row.items() if isinstance(v, dict) for n, x in v.items()}
    return {
        k: int(v) if isinstance(v, bool) else v
        for k, v in (row | flat).items()
        if k != "step" and isinstance(v, (int, float))
    }


def _init_kwargs(report_to: list[str], run_dir: Path, run_name: str) -> dict:
    kwargs: dict[str, dict] = {}
    if "wandb" in report_to:
        kwargs["wandb"] = {"dir": str(run_dir), "name": run_name}
    if "mlflow" in report_to:
        kwargs["mlflow"] = {"run_name": run_name}
        if not os.environ.get("MLFLOW_TRACKING_URI"):  # the run's own store, beside its outputs
            import mlflow

            store = (run_dir / "mlflow").resolve()
            store.mkdir(parents=True, exist_ok=True)
            mlflow.set_tracking_uri(f"sqlite:///{store / 'mlflow.db'}")
            kwargs["mlflow"]["logging_dir"] = (store / "artifacts").as_uri()
    return kwargs


def start(
    acc, report_to: list[str], run_dir: Path, config_yaml: str
) -> Callable[[dict], None] | None:
    """Open the tracker runs (rank 0), log the resolved config; the function that logs one
    metrics.jsonl line to them, or None without trackers (and on every other rank)."""
    if not report_to or not acc.is_main_process:
        return None
    from omegaconf import OmegaConf

    config = OmegaConf.to_container(OmegaConf.create(config_yaml), resolve=True)
    run_name = config.get("run_name") or run_dir.name
    for name in ("mlflow", "alembic", "wandb"):  # their INFO lines (store creation) say nothing
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        acc.init_trackers(
            str(config.get("experiment") or "default"),
            config=flat_config(config),
            init_kwargs=_init_kwargs(report_to, run_dir, run_name),
        )
    except Exception as e:  # noqa: BLE001 - any tracker's start-up failure is one line
        for tracker in acc.trackers:  # close the ones that did start
            with contextlib.suppress(Exception):
                tracker.finish()
        acc.trackers.clear()
        hint = "; without a network set WANDB_MODE=offline" if "wandb" in report_to else ""
        first = (str(e).splitlines() or [""])[0]
        raise UserError(
            f"train.report_to={_shown(report_to)}: a tracker could not start: {type(e).__name__}: "
            f"{first}{hint}"
        ) from None

    def log(row: dict) -> None:
        acc.log(tracked_values(row), step=int(row.get("step", 0)))

    return log
