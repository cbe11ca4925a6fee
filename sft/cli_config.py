"""Config composition errors as one line, and composition outside a Hydra app (tests, tools).

Hydra composes the config once, in `sft/train.py`'s Hydra app; its errors arrive there as
exceptions (HYDRA_FULL_ERROR=1), and `error_line` turns each into one line from the exception's
own fields (the missing option and its group, the OmegaConf key, value and schema class), never
by parsing Hydra's text. `compose_job` gives `sft-data`, `sft-plan`, benchmarks and tests the
same validated `JobConfig` the trainer gets.
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from sft.batching import BATCHING_CONFIGS
from sft.config import register_configs, to_job_config
from sft.errors import UserError

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")
RENAMED = {"train.tensorboard": "train.report_to=[tensorboard] (or train.report_to=none)"}
register_configs()


def _group_options(group: str) -> list[str]:
    d = Path(CONFIG_DIR) / group
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def _field_type(cls, name: str):
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - only used to word the message
        return None
    return hints.get(name)


def error_line(e: BaseException) -> str | None:
    """One line for a composition error, or None when `e` is not one."""
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

    if isinstance(e, MissingConfigException) and e.missing_cfg_file:
        group, _, opt = str(e.missing_cfg_file).rpartition("/")
        if group:
            return f"{group}={opt} is not an option; choose one of {_group_options(group)}"
        return str(e).splitlines()[0]
    if isinstance(e, OverrideParseException):
        return f"cannot parse the override {e.override!r}: {str(e.message).splitlines()[0]}"
    cause = e.__cause__ if e.__cause__ is not None else e
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and cause.full_key:
        cls = cause.object_type
        owner = cls.__name__ if cls is not None else "the config"
        if cls in BATCHING_CONFIGS.values():
            has = [n for n, c in BATCHING_CONFIGS.items() if cause.key in _fields(c)]
            where = f"; it belongs to collator={' or collator='.join(has)}" if has else ""
            option = next(n for n, c in BATCHING_CONFIGS.items() if c is cls)
            return f"{cause.full_key} is not a key of collator={option}{where}"
        if cause.full_key in RENAMED:
            return f"{cause.full_key} was replaced by {RENAMED[cause.full_key]}"
        return f"unknown config key {cause.full_key!r} (not a field of {owner})"
    if isinstance(cause, ValidationError) and cause.full_key:
        kind = _field_type(cause.object_type, str(cause.key)) if cause.object_type else None
        if isinstance(kind, type) and issubclass(kind, enum.Enum):
            allowed = [m.value for m in kind]
            return f"{cause.full_key}={cause.value!r} is not allowed; choose one of {allowed}"
        name = getattr(kind, "__name__", "value")
        return f"{cause.full_key}={cause.value!r} is not a valid {name}"
    return None


def _fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def compose(overrides: list[str], hydra_config: bool = False) -> DictConfig:
    """The composed DictConfig (run_dir must be set by an override when not under Hydra's app);
    `hydra_config` keeps the `hydra` node (sweep dir, launcher)."""
    from hydra import compose as hcompose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        try:
            return hcompose(
                config_name="train", overrides=list(overrides), return_hydra_config=hydra_config
            )
        except Exception as e:
            line = error_line(e)
            if line is None:
                raise
            raise UserError(line) from None


def compose_job(overrides: list[str]):
    """(JobConfig, resolved YAML) for the given overrides, validated as the trainer validates."""
    cfg = compose(overrides)
    return to_job_config(cfg), OmegaConf.to_yaml(cfg, resolve=True)
