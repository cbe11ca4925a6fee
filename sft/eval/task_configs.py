"""Turn the shipped YAML templates into lm_eval task configs that read the local data.

lm_eval task YAMLs are static, but the data root is only known at run time ($SFT_EVAL_DATA), and
the templates `include` lm_eval's own task files, whose location depends on the installation.
`write_task_configs()` fills the placeholders of `sft/eval/tasks/*.yaml` and writes the result
into a folder that is handed to `lm_eval.tasks.TaskManager(include_path=...)`:

    @DATA@           the data root (absolute)
    @LM_EVAL_TASKS@  the `lm_eval/tasks` folder of the installed lm_eval
    @NAME@, @FILE@   the member of a group (an MMLU subject, a BBH task) or the MATH variant
    @SUBTASKS@       the member task names of a group, as a YAML list

Invariant: every config written names only files that exist (checked before writing, with one
clear error line naming the missing file), and each benchmark writes exactly the tasks it runs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import lm_eval

from sft.errors import UserError
from sft.eval.paths import DATA_ENV
from sft.eval.registry import BENCHMARKS, Benchmark

TEMPLATES = Path(__file__).resolve().parent / "tasks"
LM_EVAL_TASKS = Path(lm_eval.__file__).resolve().parent / "tasks"
PLACEHOLDER = re.compile(r"@[A-Z_]+@")
MATH_FILES = {"math": "math_test_5000.jsonl", "math500": "math500_test.jsonl"}


def _stock_members() -> dict[str, set[str]]:
    """Sub-tasks lm_eval itself defines (our member configs include those files)."""
    mmlu = {
        p.stem[len("mmlu_") :] for p in (LM_EVAL_TASKS / "mmlu" / "default").glob("mmlu_*.yaml")
    }
    bbh = {p.stem for p in (LM_EVAL_TASKS / "bbh" / "cot_fewshot").glob("*.yaml")}
    return {"mmlu": mmlu, "bbh": bbh}


def group_members(root: Path | None, hub: bool = False) -> dict[str, list[str]]:
    """Members of each group: lm_eval's sub-tasks that also have a local data file (all with hub)."""
    stock = _stock_members()
    if hub:
        return {group: sorted(names) for group, names in stock.items()}
    mmlu_files = root.glob("mmlu/data/test/*_test.csv") if root is not None else []
    bbh_files = root.glob("bbh/bbh/*.json") if root is not None else []
    local = {
        "mmlu": {p.name[: -len("_test.csv")] for p in mmlu_files},
        "bbh": {p.stem for p in bbh_files},
    }
    return {group: sorted(stock[group] & local[group]) for group in stock}


def _yaml_str(text: str) -> str:
    """Escape text for the inside of a double-quoted YAML scalar (JSON escaping is valid YAML)."""
    return json.dumps(text)[1:-1]


def _render(template: str, dest: Path, **subs: str) -> None:
    text = (TEMPLATES / template).read_text(encoding="utf-8")
    for key, value in subs.items():
        text = text.replace(f"@{key}@", value)
    leftover = PLACEHOLDER.search(text)
    if leftover:
        raise RuntimeError(f"unfilled placeholder {leftover.group(0)} in {template}")
    dest.write_text(text, encoding="utf-8")


def _require(root: Path, rel: str, bench: str) -> None:
    if not (root / rel).is_file():
        raise UserError(
            f"{bench}: missing {root / rel}; point ${DATA_ENV} at the benchmark data folder "
            "(see docs/evaluation.md)"
        )


def write_task_configs(benchmarks: list[Benchmark], root: Path, dest: Path) -> None:
    """Write the lm_eval configs of `benchmarks` (reading data under `root`) into `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    common = {"DATA": _yaml_str(str(root)), "LM_EVAL_TASKS": _yaml_str(str(LM_EVAL_TASKS))}
    members = group_members(root)
    for bench in benchmarks:
        group, _, member = bench.name.partition("_")
        if bench.name in ("mmlu", "bbh"):
            if not members[bench.name]:
                raise UserError(
                    f"{bench.name}: no data files under {root}; point ${DATA_ENV} at the "
                    "benchmark data folder (see docs/evaluation.md)"
                )
            for m in members[bench.name]:
                _write_member(bench.name, m, dest, common)
            subtasks = "[" + ", ".join(f"{bench.task}_{m}" for m in members[bench.name]) + "]"
            _render(f"{bench.task}.yaml", dest / f"{bench.task}.yaml", SUBTASKS=subtasks, **common)
        elif group in ("mmlu", "bbh") and bench.name not in BENCHMARKS:
            _write_member(group, member, dest, common)
        elif bench.name in MATH_FILES:
            _require(root, f"math/{MATH_FILES[bench.name]}", bench.name)
            _render(
                "sft_math.yaml",
                dest / f"{bench.task}.yaml",
                NAME=bench.name,
                FILE=MATH_FILES[bench.name],
                **common,
            )
        else:
            required = {
                "gsm8k": ["gsm8k/train.jsonl", "gsm8k/test.jsonl"],
                "ifeval": ["ifeval/input_data.jsonl"],
                "humaneval": ["humaneval/HumanEval.jsonl"],
            }[bench.name]
            for rel in required:
                _require(root, rel, bench.name)
            _render(f"{bench.task}.yaml", dest / f"{bench.task}.yaml", **common)


def _write_member(group: str, member: str, dest: Path, common: dict[str, str]) -> None:
    template = {"mmlu": "sft_mmlu_subject.yaml", "bbh": "sft_bbh_task.yaml"}[group]
    _render(template, dest / f"sft_{group}_{member}.yaml", NAME=member, **common)
