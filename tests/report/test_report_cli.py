"""sft-report on synthetic run directories: report.md contents, figures, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from sft.report.cli import main

from .conftest import write_run

FIGURES = [
    "train_loss.png",
    "eval_loss.png",
    "throughput.png",
    "steps_wall.png",
    "padding.png",
    "benchmarks.png",
]


def _run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    try:
        main(argv)
        return 0, capsys.readouterr().err
    except SystemExit as e:
        return int(e.code or 0), capsys.readouterr().err


def _table(md: str, first_cell: str) -> list[list[str]]:
    """Rows (as cells) of the markdown table whose header starts with `first_cell`."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_cell} |"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return [rows[0]] + rows[2:]


def test_report_has_paper_table_run_table_and_figures(
    three_runs: list[Path], tmp_path: Path, capsys
) -> None:
    out = tmp_path / "report"
    code, err = _run([*map(str, three_runs), "--out", str(out)], capsys)
    assert code == 0, err
    md = (out / "report.md").read_text()

    bench = _table(md, "benchmark")
    assert bench[0] == ["benchmark", "padding", "random packing", "greedy packing"]
    assert [row[0] for row in bench[1:]] == ["mmlu", "gsm8k", "bbh", "**Average**"]
    assert bench[1] == ["mmlu", "41.00", "42.00", "**43.00**"]
    assert bench[3] == ["bbh", "30.00", "**31.00**", "–"]
    assert bench[-1] == ["**Average**", "26.50", "28.00", "29.00"]  # over mmlu+gsm8k only
    assert "not in every run: bbh" in md

    runs = {row[0]: row for row in _table(md, "run")[1:]}
    header = _table(md, "run")[0]
    steps, ratio, eff = (
        header.index("steps"),
        header.index("padding ratio"),
        header.index("pack efficiency"),
    )
    assert [runs[n][steps] for n in ("lima-padding", "lima-random", "lima-greedy")] == [
        "120",
        "45",
        "42",
    ]
    assert runs["lima-padding"][ratio] == "2.45" and runs["lima-padding"][eff] == "–"
    assert runs["lima-greedy"][eff] == "98.5%"

    for name in FIGURES:
        assert f"]({name})" in md
        image = imread(out / name)
        assert image.shape[0] > 400 and image.shape[1] > 600, name
        assert (out / name).stat().st_size > 15_000, name
        inked = (image[..., :3] < 0.9).any(axis=-1).mean()  # share of non-white pixels
        assert 0.02 < inked < 0.6, (name, inked)
        assert np.ptp(image[..., :3]) > 0.5, name


def test_missing_metrics_is_one_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "run").mkdir()
    code, err = _run([str(tmp_path / "run"), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "no metrics.jsonl" in err and err.strip().count("\n") == 0
    code, err = _run([str(tmp_path / "nope"), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "no such folder" in err


def test_partial_run_is_reported_from_metrics_alone(tmp_path: Path, capsys) -> None:
    run = write_run(tmp_path, "lima-greedy", evals=False, bench=False)
    (run / "summary.json").unlink()
    (run / "config.yaml").unlink()
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 43, "loss": 1.')  # a line cut by a killed job
    out = tmp_path / "report"
    code, err = _run([str(run), "--out", str(out)], capsys)
    assert code == 0, err
    md = (out / "report.md").read_text()
    assert "No run has benchmark results yet" in md
    assert "1 unreadable line(s)" in md and "taken from metrics.jsonl" in md
    row = _table(md, "run")[1]
    assert row[0] == "lima-greedy" and row[3] == "42"  # steps from the last training line
    assert not (out / "eval_loss.png").exists() and not (out / "benchmarks.png").exists()
    assert (out / "train_loss.png").is_file()


def test_two_runs_in_one_column_are_told_apart(tmp_path: Path, capsys) -> None:
    a = write_run(tmp_path / "a", "lima-padding")
    b = write_run(tmp_path / "b", "lima-padding")
    summary = json.loads((b / "eval" / "summary.json").read_text())
    (b / "eval" / "summary.json").write_text(json.dumps(summary[:1]))
    out = tmp_path / "report"
    assert _run([str(a), str(b), "--out", str(out), "--smooth", "0"], capsys)[0] == 0
    header = _table((out / "report.md").read_text(), "benchmark")[0]
    assert len(header) == 3 and all(h.startswith("padding (lima-padding") for h in header[1:])


def test_bad_smoothing_is_rejected(three_runs: list[Path], tmp_path: Path, capsys) -> None:
    code, err = _run([str(three_runs[0]), "--out", str(tmp_path), "--smooth", "1.5"], capsys)
    assert code == 2 and "--smooth" in err
