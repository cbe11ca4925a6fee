"""prepare_data: every row is kept or counted; overlong policies; validation split; cache."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sft.config import DataConfig
from sft.data.dataset import prepare_data
from sft.errors import UserError


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _conv(q, a):
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def test_pieces_reference_real_tokens(tiny_tokenizer, tmp_path):
    path = _write(tmp_path / "d.jsonl", [_conv(f"q{i}", "a" * (i + 1)) for i in range(20)])
    d = prepare_data(tiny_tokenizer, DataConfig(path=path, max_length=512), progress=False)
    assert len(d.train) == 20 and len(d.val) == 0
    for r, a, b in d.train:
        assert a == d.tokens.offsets[r] and b == d.tokens.offsets[r + 1]
        assert d.tokens.mask[a + 1 : b].any()


@pytest.mark.parametrize("policy,expect_pieces", [("truncate", 3), ("drop", 2), ("split", 4)])
def test_overlong_policies_count_every_row(tiny_tokenizer, tmp_path, policy, expect_pieces):
    rows = [_conv("short", "ok"), _conv("x" * 10, "y" * 150), _conv("tiny", "fine")]
    d = prepare_data(
        tiny_tokenizer,
        DataConfig(path=_write(tmp_path / "d.jsonl", rows), max_length=100, overlong=policy),
        progress=False,
    )
    assert len(d.train) == expect_pieces
    assert (d.train[:, 2] - d.train[:, 1] <= 100).all()
    counted = {"truncate": "truncated", "drop": "dropped_overlong", "split": "split"}[policy]
    assert d.report.counts[counted] == 1


def test_split_keeps_every_token(tiny_tokenizer, tmp_path):
    rows = [_conv("q" * 30, "a" * 300)]
    d = prepare_data(
        tiny_tokenizer,
        DataConfig(path=_write(tmp_path / "d.jsonl", rows), max_length=64, overlong="split"),
        progress=False,
    )
    covered = sum(int(b - a) for _, a, b in d.train)
    # fragments without a target are dropped and counted, the rest cover the sample end to end
    dropped = d.report.counts.get("split_fragments_without_target", 0)
    assert covered + 64 * dropped >= len(d.tokens.ids) - 64


def test_truncation_that_removes_all_targets_drops_the_sample(tiny_tokenizer, tmp_path):
    rows = [_conv("p" * 200, "answer"), _conv("ok", "yes")]
    d = prepare_data(
        tiny_tokenizer,
        DataConfig(path=_write(tmp_path / "d.jsonl", rows), max_length=50, max_bad_fraction=0.5),
        progress=False,
    )
    assert len(d.train) == 1
    assert d.report.counts["no_supervised_tokens"] == 1


def test_val_fraction_is_disjoint_and_seeded(tiny_tokenizer, tmp_path):
    path = _write(tmp_path / "d.jsonl", [_conv(f"q{i}", f"a{i}") for i in range(100)])
    d1 = prepare_data(tiny_tokenizer, DataConfig(path=path, val_fraction=0.1), 1, progress=False)
    d2 = prepare_data(tiny_tokenizer, DataConfig(path=path, val_fraction=0.1), 1, progress=False)
    assert len(d1.val) == 10 and len(d1.train) == 90
    assert not set(d1.val[:, 0]) & set(d1.train[:, 0])
    np.testing.assert_array_equal(d1.val, d2.val)


@pytest.mark.parametrize("combine", ["none", "random"])
def test_val_seed_holds_the_validation_rows_across_run_seeds(tiny_tokenizer, tmp_path, combine):
    path = _write(tmp_path / "d.jsonl", [_conv(f"q{i}", f"a{i}") for i in range(100)])

    def val_rows(seed, **kw):
        cfg = DataConfig(path=path, val_fraction=0.1, combine=combine, **kw)
        d = prepare_data(tiny_tokenizer, cfg, seed, progress=False)
        return [d.tokens.row_ids[r] for r in d.val[:, 0]]

    assert val_rows(1) != val_rows(2)  # by default the split follows the run seed
    assert val_rows(1, val_seed=5) == val_rows(2, val_seed=5) == val_rows(5)
    assert len(val_rows(3, val_seed=5)) == 10


def test_val_path(tiny_tokenizer, tmp_path):
    tr = _write(tmp_path / "t.jsonl", [_conv(f"q{i}", "a") for i in range(5)])
    va = _write(tmp_path / "v.jsonl", [_conv(f"v{i}", "b") for i in range(3)])
    d = prepare_data(tiny_tokenizer, DataConfig(path=tr, val_path=va), progress=False)
    assert (len(d.train), len(d.val)) == (5, 3)


def test_malformed_line_fails_with_file_and_line(tiny_tokenizer, tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text(json.dumps(_conv("a", "b")) + "\n{not json\n")
    with pytest.raises(UserError, match=r"bad\.jsonl:2: bad row \(malformed_json"):
        prepare_data(tiny_tokenizer, DataConfig(path=str(p)), progress=False)


def test_bad_rows_skipped_within_budget(tiny_tokenizer, tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text("".join(json.dumps(_conv(f"q{i}", "a")) + "\n" for i in range(9)) + "{oops\n")
    d = prepare_data(tiny_tokenizer, DataConfig(path=str(p), max_bad_fraction=0.2), progress=False)
    assert len(d.train) == 9 and d.report.counts["malformed_json"] == 1
    assert d.report.examples["malformed_json"] == [f"{p}:10"]


def test_missing_file_is_one_line(tiny_tokenizer, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        prepare_data(tiny_tokenizer, DataConfig(path=str(tmp_path / "nope.jsonl")), progress=False)


def test_demo_default(tiny_tokenizer):
    d = prepare_data(
        tiny_tokenizer, DataConfig(path="", demo_size=60, max_length=4096), progress=False
    )
    assert len(d.train) == 60


def test_shared_lima_loads(tiny_tokenizer, shared_data):
    d = prepare_data(
        tiny_tokenizer,
        DataConfig(
            path=str(shared_data / "lima" / "lima_messages.jsonl"), limit=50, max_length=100000
        ),
        progress=False,
    )
    assert len(d.train) == 50


def test_limit_with_val_path_cuts_training_rows_only(tiny_tokenizer, tmp_path):
    """data.limit keeps the first N training rows; every val_path row stays validation."""

    def conv(tag: str, i: int) -> dict:
        return {
            "messages": [
                {"role": "user", "content": f"{tag} question {i}"},
                {"role": "assistant", "content": f"{tag} answer {i}"},
            ]
        }

    tr = _write(tmp_path / "train.jsonl", [conv("train", i) for i in range(40)])
    va = _write(tmp_path / "val.jsonl", [conv("val", i) for i in range(10)])
    d = prepare_data(tiny_tokenizer, DataConfig(path=tr, val_path=va, limit=20), progress=False)
    train_ids = [d.tokens.row_ids[int(r)] for r in d.train[:, 0]]
    val_ids = [d.tokens.row_ids[int(r)] for r in d.val[:, 0]]
    assert len(train_ids) == 20 and all(w.startswith(tr) for w in train_ids)
    assert len(val_ids) == 10 and all(w.startswith(va) for w in val_ids)
    assert sorted(val_ids) == sorted(f"{va}:{i}" for i in range(1, 11))


def test_sample_draws_the_same_rows_for_every_run_seed_in_file_order(tiny_tokenizer, tmp_path):
    path = _write(tmp_path / "d.jsonl", [_conv(f"q{i}", f"a{i}") for i in range(50)])
    cfg = DataConfig(path=path, max_length=512, sample=12, sample_seed=3, val_fraction=0.25)
    a = prepare_data(tiny_tokenizer, cfg, seed=0, progress=False)
    b = prepare_data(tiny_tokenizer, cfg, seed=1, progress=False)
    assert a.tokens.row_ids == b.tokens.row_ids and len(a.tokens.row_ids) == 12
    lines = [int(w.rsplit(":", 1)[1]) for w in a.tokens.row_ids]
    assert lines == sorted(lines) and lines != list(range(1, 13))  # file order, not the head
    assert sorted(a.val[:, 0].tolist()) != sorted(b.val[:, 0].tolist())  # seeds: other split
    other = DataConfig(path=path, max_length=512, sample=12, sample_seed=4)
    assert prepare_data(tiny_tokenizer, other, progress=False).tokens.row_ids != a.tokens.row_ids
    with pytest.raises(UserError, match="choose one"):
        DataConfig(path=path, sample=12, limit=5)


def test_eval_by_names_the_value_of_every_validation_piece(tiny_tokenizer, tmp_path):
    rows = [_conv(f"q{i}", f"a{i}") | {"source": "ab"[i % 2]} for i in range(40)]
    path = _write(tmp_path / "d.jsonl", rows)
    cfg = DataConfig(path=path, max_length=512, val_fraction=0.3, eval_by="source")
    d = prepare_data(tiny_tokenizer, cfg, progress=False)
    assert len(d.val_groups) == len(d.val) == 12 and sorted(d.val_group_names) == ["a", "b"]
    for (r, _, _), g in zip(d.val, d.val_groups):
        line = int(d.tokens.row_ids[r].rsplit(":", 1)[1])
        assert d.val_group_names[g] == "ab"[(line - 1) % 2]
    for row in rows[2:]:
        row.pop("source")
    path = _write(tmp_path / "e.jsonl", rows)
    with pytest.raises(UserError, match="validation row has no field 'source' for data.eval_by"):
        prepare_data(tiny_tokenizer, DataConfig(path=path, val_fraction=0.5, eval_by="source"))
