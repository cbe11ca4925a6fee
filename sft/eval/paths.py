"""Where the evaluation reads its data and model, and where it writes results.

Data root: `$SFT_EVAL_DATA` if set, else `<project root>/../shared/data` (the folder that holds
`gsm8k/`, `mmlu/`, `bbh/`, `ifeval/`, `humaneval/`, `math/`).

Model target, from the path given to `sft-eval` or `evaluate()`:

| path given                          | model evaluated            | results written to (default)  |
|-------------------------------------|----------------------------|-------------------------------|
| `RUN_DIR` (has `final/`)            | `RUN_DIR/final`            | `RUN_DIR/eval/`               |
| `RUN_DIR/final`                     | itself                     | `RUN_DIR/eval/`               |
| `RUN_DIR/checkpoints/step-N`        | `step-N/model`             | `RUN_DIR/eval/step-N/`        |
| any HF model dir or hub id          | itself                     | `--out` (required)            |

Invariant: `locate()` never guesses an output folder for a bare model; the tokenizer comes from
the model folder when it has one, else the checkpoint folder or its `tokenizer/`, else
`RUN_DIR/final`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from sft.errors import UserError

DATA_ENV = "SFT_EVAL_DATA"
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def data_root(explicit: str | os.PathLike | None = None) -> Path:
    """The offline benchmark data folder: `explicit`, else $SFT_EVAL_DATA, else ../shared/data."""
    if explicit is not None:
        return Path(explicit).expanduser().resolve()
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return (PROJECT_ROOT / ".." / "shared" / "data").resolve()


def is_model_dir(path: Path) -> bool:
    """A folder `from_pretrained` can load: a full model or a PEFT adapter."""
    return (path / "config.json").is_file() or (path / "adapter_config.json").is_file()


def has_tokenizer(path: Path) -> bool:
    return (path / "tokenizer_config.json").is_file() or (path / "tokenizer.json").is_file()


@dataclass(frozen=True)
class EvalTarget:
    """What to evaluate and where its results go.

    model: a local model folder, or a hub id (string) when the path does not exist.
    tokenizer: the folder (or hub id) to load the tokenizer from.
    out_dir: the default results folder, None for a bare model (then --out is required).
    run_dir: the training run the model belongs to, when known.
    """

    model: str
    tokenizer: str
    out_dir: Path | None
    run_dir: Path | None


def _looks_like_run_dir(path: Path) -> bool:
    return any((path / name).exists() for name in ("summary.json", "metrics.jsonl", "config.yaml"))


def locate(path: str | os.PathLike) -> EvalTarget:
    """Resolve a run dir, a checkpoint dir, a model dir or a hub id into an `EvalTarget`."""
    p = Path(path).expanduser()
    if not p.exists():
        name = str(path)
        if re.fullmatch(r"[\w.-]+/[\w.-]+", name) and not name.startswith("."):
            return EvalTarget(model=name, tokenizer=name, out_dir=None, run_dir=None)  # hub id
        raise UserError(f"{path} does not exist; give a run dir, a checkpoint or a model dir")
    p = p.resolve()
    if is_model_dir(p / "final"):
        return EvalTarget(str(p / "final"), _tokenizer_for(p / "final", [], p), p / "eval", p)
    if is_model_dir(p / "model"):
        model = p / "model"
        if p.parent.name == "checkpoints":
            run = p.parent.parent
            return EvalTarget(
                str(model), _tokenizer_for(model, [p], run), run / "eval" / p.name, run
            )
        return EvalTarget(str(model), _tokenizer_for(model, [p], None), p / "eval", None)
    if is_model_dir(p):
        run = p.parent if p.name == "final" and _looks_like_run_dir(p.parent) else None
        out = run / "eval" if run is not None else None
        return EvalTarget(str(p), _tokenizer_for(p, [], run), out, run)
    raise UserError(
        f"{p} holds no model: expected a run dir with final/, a checkpoint with model/, "
        "or a folder with config.json"
    )


def _tokenizer_for(model: Path, extra: list[Path], run: Path | None) -> str:
    """The first folder with tokenizer files: model, checkpoint, checkpoint/tokenizer, run/final."""
    candidates = [model]
    for c in extra:
        candidates += [c, c / "tokenizer"]
    if run is not None:
        candidates.append(run / "final")
    for c in candidates:
        if has_tokenizer(c):
            return str(c)
    return str(model)
