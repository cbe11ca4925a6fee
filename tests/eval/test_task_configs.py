from __future__ import annotations

import re
from pathlib import Path

import pytest

from sft.errors import UserError
from sft.eval.registry import BENCHMARKS, resolve_benchmark
from sft.eval.task_configs import group_members, write_task_configs


def test_all_benchmarks_render_without_placeholders(eval_data: Path, tmp_path: Path) -> None:
    from lm_eval.tasks._yaml_loader import load_yaml

    write_task_configs(list(BENCHMARKS.values()), eval_data, tmp_path)
    files = sorted(tmp_path.glob("*.yaml"))
    members = group_members(eval_data)
    assert len(members["mmlu"]) == 57 and len(members["bbh"]) == 27
    assert len(files) == 7 + 57 + 27  # gsm8k ifeval humaneval math math500, 2 groups, members
    for f in files:
        text = f.read_text()
        assert not re.search(r"@[A-Z_]+@", text), f.name
        cfg = load_yaml(f, resolve_func=False)  # includes resolve: lm_eval's own files exist
        for path in (cfg.get("dataset_kwargs") or {}).get("data_files", {}).values():
            assert Path(path).is_file(), (f.name, path)


def test_missing_data_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="SFT_EVAL_DATA"):
        write_task_configs([BENCHMARKS["gsm8k"]], tmp_path / "empty", tmp_path / "out")
    with pytest.raises(UserError, match="no data files"):
        write_task_configs([BENCHMARKS["mmlu"]], tmp_path / "empty", tmp_path / "out")


def test_lm_eval_loads_the_local_data(eval_data: Path, tmp_path: Path) -> None:
    """Each offline task builds in lm_eval and sees the full local test set."""
    from lm_eval.tasks import TaskManager

    names = ["gsm8k", "mmlu_anatomy", "bbh_navigate", "math500", "humaneval"]
    members = group_members(eval_data)
    benches = [resolve_benchmark(n, members) for n in names]
    write_task_configs(benches, eval_data, tmp_path)
    loaded = TaskManager(include_path=str(tmp_path)).load([b.task for b in benches])["tasks"]
    sizes = {name: len(list(task.test_docs())) for name, task in loaded.items()}
    assert sizes == {
        "sft_gsm8k": 1319,
        "sft_mmlu_anatomy": 135,
        "sft_bbh_navigate": 250,
        "sft_math500": 500,
        "sft_humaneval": 164,
    }
    anatomy = loaded["sft_mmlu_anatomy"]
    doc = next(iter(anatomy.test_docs()))
    assert len(doc["choices"]) == 4 and doc["answer"] in range(4)
    assert len(list(anatomy.fewshot_docs())) == 5
