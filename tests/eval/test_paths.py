from __future__ import annotations

from pathlib import Path

import pytest

from sft.errors import UserError
from sft.eval.paths import DATA_ENV, data_root, locate


def _model(path: Path, tokenizer: bool = True) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    if tokenizer:
        (path / "tokenizer_config.json").write_text("{}")
    return path


def test_run_dir_evaluates_final_and_writes_into_eval(tmp_path: Path) -> None:
    _model(tmp_path / "run" / "final")
    t = locate(tmp_path / "run")
    assert Path(t.model) == tmp_path / "run" / "final"
    assert t.out_dir == tmp_path / "run" / "eval" and t.run_dir == tmp_path / "run"


def test_final_dir_of_a_run_writes_into_the_run(tmp_path: Path) -> None:
    _model(tmp_path / "run" / "final")
    (tmp_path / "run" / "metrics.jsonl").write_text("")
    assert locate(tmp_path / "run" / "final").out_dir == tmp_path / "run" / "eval"


def test_checkpoint_uses_model_subdir_and_run_tokenizer(tmp_path: Path) -> None:
    _model(tmp_path / "run" / "final")
    _model(tmp_path / "run" / "checkpoints" / "step-20" / "model", tokenizer=False)
    t = locate(tmp_path / "run" / "checkpoints" / "step-20")
    assert Path(t.model) == tmp_path / "run" / "checkpoints" / "step-20" / "model"
    assert Path(t.tokenizer) == tmp_path / "run" / "final"
    assert t.out_dir == tmp_path / "run" / "eval" / "step-20"


def test_bare_model_has_no_default_output(tmp_path: Path) -> None:
    assert locate(_model(tmp_path / "m")).out_dir is None


def test_missing_path_and_empty_dir_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        locate(tmp_path / "nope")
    with pytest.raises(UserError, match="holds no model"):
        locate(tmp_path)


def test_hub_id_passes_through() -> None:
    t = locate("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert t.model == "HuggingFaceTB/SmolLM2-135M-Instruct" and t.out_dir is None


def test_data_root_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    assert data_root() == tmp_path.resolve()
    monkeypatch.delenv(DATA_ENV)
    assert data_root().parts[-2:] == ("shared", "data")
