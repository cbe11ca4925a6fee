"""Config composition outside a Hydra app: for tests, tools and the one-line error pre-check.

Hydra reports a bad override as a multi-line message; `precheck_overrides` composes the same
config first and turns any failure into one `UserError` line naming the key and, for a group,
the allowed options. `compose_job` gives tests and tools a validated `JobConfig`.
"""

from __future__ import annotations

import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from sft.config import register_configs, to_job_config
from sft.errors import UserError

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")
register_configs()


def _group_options(group: str) -> list[str]:
    d = Path(CONFIG_DIR) / group
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def compose(overrides: list[str]) -> DictConfig:
    """The composed DictConfig (run_dir must be set by an override when not under Hydra's app)."""
    from hydra import compose as hcompose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        try:
            cfg = hcompose(config_name="train", overrides=list(overrides))
        except Exception as e:  # noqa: BLE001 - converted to one line
            raise UserError(_one_line(e)) from None
    return cfg


def _one_line(e: BaseException) -> str:
    msg = str(e).strip()
    if e.__cause__ is not None:  # Hydra wraps the OmegaConf error that names the key
        msg = f"{msg}\n{e.__cause__}"
    m = re.search(r"Could not find '([^/']+)/([^']+)'", msg)
    if m:
        group, opt = m.groups()
        return f"{group}={opt} is not an option; choose one of {_group_options(group)}"
    m = re.search(r"Key '([^']+)' not in '(\w+)'", msg)
    if m:
        full = re.search(r"full_key: (\S+)", msg)
        return f"unknown config key {full.group(1) if full else m.group(1)!r} (not a field of {m.group(2)})"
    m = re.search(r"Value '([^']*)' (?:of type '\w+' )?could not be converted to (\w+)", msg)
    if m:
        full = re.search(r"full_key: (\S+)", msg)
        return f"{full.group(1) if full else 'a key'}={m.group(1)!r} is not a valid {m.group(2)}"
    return msg.splitlines()[0] if msg else type(e).__name__


def precheck_overrides(argv: list[str]) -> None:
    """Compose and validate the config for `argv` (skipped for multirun sweeps and Hydra flags)."""
    if any(a in ("-m", "--multirun") for a in argv) or any(a.startswith("-") for a in argv):
        return
    overrides = [a for a in argv if not a.startswith("hydra.") and not a.startswith("hydra/")]
    if not any(a.startswith("run_dir=") for a in overrides):
        overrides.append("run_dir=/tmp/sft-precheck")
    cfg = compose(overrides)
    try:
        to_job_config(cfg)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001
        raise UserError(_one_line(e)) from None


def compose_job(overrides: list[str]):
    """(JobConfig, resolved YAML) for the given overrides; used by tests and tools."""
    cfg = compose(overrides)
    return to_job_config(cfg), OmegaConf.to_yaml(cfg, resolve=True)
