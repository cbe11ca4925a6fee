"""Bad data: every reason is detected, counted with its file:line, and fails the run by default.

Default policy (data.max_bad_fraction=0): the first bad row stops the run with one line naming
file and line, exit code 2, no traceback. With a tolerance, bad rows are skipped and counted by
reason in data_report.json and summary.json. No micro-batch without a supervised token is ever
built, whatever the collator.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sft.batching import BATCHING_CONFIGS
from sft.config import DataConfig, ModelConfig
from sft.data.dataset import prepare_data
from sft.errors import UserError
from sft.models.build import load_tokenizer

from .conftest import run_train


def good(i: int) -> str:
    return json.dumps(
        {
            "messages": [
                {"role": "user", "content": f"What is {i} + 1?"},
                {"role": "assistant", "content": str(i + 1)},
            ]
        }
    )


BAD = {  # reason -> the raw bytes of one line
    "malformed_json": b'{"messages": [{"role": "user", "content": "hi"}',
    "non_utf8": b'{"messages": [{"role": "user", "content": "caf\xe9"}, {"role": "assistant", "content": "ok"}]}',
    "unknown_role": json.dumps(
        {"messages": [{"role": "wizard", "content": "hi"}, {"role": "assistant", "content": "ok"}]}
    ).encode(),
    "empty_conversation": json.dumps({"messages": []}).encode(),
    "no_supervised_tokens": json.dumps(
        {
            "messages": [
                {"role": "user", "content": "x" * 400},
                {"role": "assistant", "content": "short"},
            ]
        }
    ).encode(),
}
MAX_LENGTH = 128  # the 400-character prompt leaves no assistant token within it


def write_jsonl(path: Path, bad_lines: dict[int, bytes], n: int = 12) -> Path:
    lines = [bad_lines.get(i, good(i).encode()) for i in range(1, n + 1)]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(ModelConfig(name_or_path="tiny"))


def prepare(tokenizer, path: Path, max_bad_fraction: float = 0.0, **kw):
    return prepare_data(
        tokenizer,
        DataConfig(path=str(path), max_length=MAX_LENGTH, max_bad_fraction=max_bad_fraction, **kw),
        progress=False,
    )


@pytest.mark.parametrize("reason", sorted(BAD))
def test_each_reason_stops_the_run_by_default_naming_file_and_line(tokenizer, tmp_path, reason):
    path = write_jsonl(tmp_path / "d.jsonl", {5: BAD[reason], 9: BAD[reason]})
    with pytest.raises(UserError) as e:
        prepare(tokenizer, path)
    msg = str(e.value)
    assert msg.startswith(f"{path}:5: bad row ({reason}") and "\n" not in msg


@pytest.mark.parametrize("reason", sorted(BAD))
def test_each_reason_is_skipped_and_counted_within_the_tolerance(tokenizer, tmp_path, reason):
    path = write_jsonl(tmp_path / "d.jsonl", {3: BAD[reason]})
    data = prepare(tokenizer, path, max_bad_fraction=0.1)
    report = data.report.to_dict()
    assert report["rows_read"] == 12 and report["counts"][reason] == 1
    assert report["examples"][reason] == [f"{path}:3"]
    trained_rows = {data.tokens.row_ids[int(r)] for r in data.train[:, 0]}
    assert f"{path}:3" not in trained_rows and len(data.train) == 11


def test_first_bad_row_is_named_in_file_order_across_reasons(tokenizer, tmp_path):
    # a tokenization-stage reason early in the file, a read-stage one later: the early one is named
    path = write_jsonl(
        tmp_path / "d.jsonl", {2: BAD["no_supervised_tokens"], 7: BAD["malformed_json"]}
    )
    with pytest.raises(UserError, match=rf"^{path}:2: bad row \(no_supervised_tokens"):
        prepare(tokenizer, path, max_bad_fraction=0.1)


def test_all_reasons_together_over_the_tolerance_fail(tokenizer, tmp_path):
    path = write_jsonl(
        tmp_path / "d.jsonl", {i + 2: BAD[r] for i, r in enumerate(sorted(BAD))}, n=20
    )
    with pytest.raises(UserError, match="5 bad row"):
        prepare(tokenizer, path, max_bad_fraction=0.2)
    data = prepare(tokenizer, path, max_bad_fraction=0.25)
    assert {r: data.report.counts[r] for r in BAD} == {r: 1 for r in BAD}


@pytest.mark.parametrize("collator", ["padding", "packing", "padding_free"])
def test_no_micro_batch_without_a_target_is_ever_built(tokenizer, tmp_path, collator):
    # rows whose only targets were truncated away, plus rows with a one-token answer
    bad = {i: BAD["no_supervised_tokens"] for i in range(1, 40, 3)}
    path = write_jsonl(tmp_path / "d.jsonl", bad, n=40)
    data = prepare(tokenizer, path, max_bad_fraction=0.5)
    assert data.report.counts["no_supervised_tokens"] == len(bad)  # the filter had work to do
    batching = BATCHING_CONFIGS[collator]().build(MAX_LENGTH)
    collate = batching.collator(tokenizer.pad_token_id, "sdpa")
    seen = 0
    for epoch in range(2):
        plan = batching.plan(
            data.train,
            data.tokens.targets,
            micro_batch_size=1,
            grad_accum=2,
            world_size=2,
            seed=0,
            epoch=epoch,
        )
        for step in plan.steps:
            for rank in step:
                for rows in rank:
                    _, meta = collate(rows, data.tokens)
                    assert meta.targets > 0, f"micro-batch {rows} has no supervised token"
                    seen += 1
    assert seen > 10
    for _, a, b in data.train:  # and every piece itself has a target after its first token
        assert np.asarray(data.tokens.mask[a + 1 : b]).any()


@pytest.mark.slow
def test_run_stops_with_one_line_exit_2_and_no_traceback(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", {4: BAD["unknown_role"]})
    r = run_train(
        tmp_path / "run",
        "model=tiny",
        "data=file",
        f"data.path={path}",
        "data.max_bad_fraction=0",
        "data.val_fraction=0",
        "train.max_steps=1",
        "train.progress=false",
        "train.report_to=none",
    )
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode == 2, r.stderr[-2000:]
    assert errors == [errors[0]] and f"{path}:4: bad row (unknown_role" in errors[0]
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_skipped_rows_are_reported_in_data_report_and_summary(tmp_path):
    path = write_jsonl(
        tmp_path / "d.jsonl", {i + 2: BAD[r] for i, r in enumerate(sorted(BAD))}, n=20
    )
    run = tmp_path / "run"
    r = run_train(
        run,
        "model=tiny",
        "data=file",
        f"data.path={path}",
        "data.val_fraction=0",
        f"data.max_length={MAX_LENGTH}",
        "data.max_bad_fraction=0.3",
        "train.max_steps=1",
        "train.micro_batch_size=2",
        "train.progress=false",
        "train.report_to=none",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((run / "data_report.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    for i, reason in enumerate(sorted(BAD)):
        assert report["counts"][reason] == 1 and report["examples"][reason] == [f"{path}:{i + 2}"]
        assert summary["data"][reason] == 1
    assert report["counts"]["train_pieces"] == 15


def test_a_utf8_byte_order_mark_is_accepted(tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", {})
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    data = prepare(tokenizer, path)
    assert data.report.rows_read == 12 and len(data.train) == 12
    as_json = tmp_path / "d.json"
    as_json.write_bytes(b"\xef\xbb\xbf" + json.dumps([json.loads(good(1))]).encode())
    assert len(prepare(tokenizer, as_json).train) == 1


def test_a_duplicate_json_key_is_a_bad_row_not_a_silent_choice(tokenizer, tmp_path):
    dup = b'{"messages": [{"role": "user", "content": "a", "content": "b"}, {"role": "assistant", "content": "c"}]}'
    path = write_jsonl(tmp_path / "d.jsonl", {4: dup})
    with pytest.raises(UserError, match=rf"^{path}:4: bad row \(duplicate_key: key content"):
        prepare(tokenizer, path)


@pytest.mark.parametrize(
    "row,reason",
    [
        ({"instruction": "q", "output": None}, "non_text_content"),
        ({"instruction": ["a"], "output": "y"}, "non_text_content"),
        ({"messages": "hello"}, "malformed_conversation"),
    ],
)
def test_wrong_types_are_bad_rows_with_file_and_line(tokenizer, tmp_path, row, reason):
    path = write_jsonl(tmp_path / "d.jsonl", {6: json.dumps(row).encode()})
    with pytest.raises(UserError, match=rf"^{path}:6: bad row \({reason}"):
        prepare(tokenizer, path)


def test_a_corrupt_parquet_file_is_one_line(tokenizer, tmp_path):
    path = tmp_path / "d.parquet"
    path.write_bytes(b"PAR1" + b"\x00garbage" * 50)
    with pytest.raises(UserError, match=rf"^{path}: not a readable parquet file") as e:
        prepare(tokenizer, path)
    assert "\n" not in str(e.value)
