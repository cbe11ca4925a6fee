"""data.turns / data.combine: filtered rows counted, combined conversations lose nothing."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from sft.config import DataConfig
from sft.data.dataset import prepare_data
from sft.data.turns import Conversation, combine, select_turns
from sft.errors import UserError


def _conv(i: int, turns: int = 1, system: str | None = None, tag: str = "a") -> Conversation:
    msgs = [{"role": "system", "content": system}] if system else []
    for t in range(turns):
        msgs += [
            {"role": "user", "content": f"q{i}.{t}"},
            {"role": "assistant", "content": f"a{i}.{t}"},
        ]
    return Conversation(msgs, f"f:{i}", tag=tag)


def _exchanges(convs):
    """Every (user, assistant) content pair, with multiplicity."""
    out = Counter()
    for c in convs:
        body = [m for m in c.messages if m["role"] != "system"]
        out.update((u["content"], a["content"]) for u, a in zip(body[::2], body[1::2]))
    return out


def test_select_turns_keeps_validation_rows_and_names_the_dropped():
    convs = [_conv(0), _conv(1, turns=2), _conv(2), _conv(3, turns=3)]
    convs.append(Conversation(_conv(4, turns=2).messages, "val:1", is_val=True))
    single, dropped = select_turns(convs, "single")
    assert [c.where for c in single] == ["f:0", "f:2", "val:1"] and dropped == ["f:1", "f:3"]
    multi, dropped = select_turns(convs, "multi")
    assert [c.where for c in multi] == ["f:1", "f:3", "val:1"] and dropped == ["f:0", "f:2"]
    assert select_turns(convs, "all") == (convs, [])


@pytest.mark.parametrize("mode", ["random", "same_tag"])
@pytest.mark.parametrize("k", [2, 3, 5])
def test_combine_keeps_every_exchange_once(mode, k):
    convs = [_conv(i, tag="ab"[i % 2]) for i in range(23)] + [_conv(99, turns=2)]
    convs += [_conv(50 + i, system="be brief", tag="a") for i in range(4)]
    out, merged = combine(convs, mode, k, seed=0)
    assert _exchanges(out) == _exchanges(convs)  # nothing lost, nothing doubled
    assert len(convs) - len(out) == merged
    members = Counter(w for c in out for w in c.where.split("+"))
    assert members == Counter(c.where for c in convs)
    for c in out:
        roles = [m["role"] for m in c.messages]
        systems = roles.count("system")
        assert systems <= 1 and (systems == 0 or roles[0] == "system")
        n_members = len(c.where.split("+"))
        assert n_members <= k
        ids = [int(w.split(":")[1]) for w in c.where.split("+")]
        if systems:  # only conversations with the same system message are combined
            assert all(50 <= i < 54 for i in ids)
        elif n_members > 1:
            assert all(i < 23 for i in ids)
            if mode == "same_tag":
                assert len({i % 2 for i in ids}) == 1  # one tag per combined conversation
    assert any(len(c.where.split("+")) == k for c in out)


def test_combine_is_seeded():
    convs = [_conv(i) for i in range(12)]
    a, _ = combine(convs, "random", 3, seed=0)
    b, _ = combine(convs, "random", 3, seed=0)
    c, _ = combine(convs, "random", 3, seed=1)
    assert [x.where for x in a] == [x.where for x in b] != [x.where for x in c]


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _row(i, turns=1, source="s0"):
    return {"source": source, "messages": _conv(i, turns).messages}


def test_prepare_data_counts_every_row(tiny_tokenizer, tmp_path):
    rows = [_row(i, source=f"s{i % 3}") for i in range(20)] + [_row(30, 2), _row(31, 3)]
    path = _write(tmp_path / "d.jsonl", rows)
    cfg = DataConfig(path=path, combine="same_tag", combine_turns=4, turns="single")
    d = prepare_data(tiny_tokenizer, cfg, progress=False)
    c = d.report.counts
    assert c["turns_not_single"] == 2 and c["combined_into_others"] == 20 - len(d.train)
    assert d.report.rows_read == len(d.train) + c["combined_into_others"] + 2
    assert len(d.train) == 6  # s0: 7 rows -> 4+3; s1: 7 -> 4+3; s2: 6 -> 4+2
    for p, (r, a, b) in enumerate(d.train):
        members = d.tokens.row_ids[r].split("+")
        assert len({int(w.rsplit(":", 1)[1]) % 3 for w in members}) == 1  # one source each
    # every assistant turn of a combined conversation is trained (train_on=assistant)
    trained = sum(int(d.tokens.mask[a:b].any()) for _, a, b in d.train)
    assert trained == len(d.train)


@pytest.mark.parametrize("mode", ["random", "same_tag"])
def test_held_out_rows_are_drawn_before_combining(tiny_tokenizer, tmp_path, mode):
    rows = [_row(i, source=f"s{i % 3}") for i in range(40)]
    path = _write(tmp_path / "d.jsonl", rows)
    split = {"val_fraction": 0.25, "val_max_samples": 8, "eval_by": "source"}
    ref = prepare_data(tiny_tokenizer, DataConfig(path=path, **split), seed=1, progress=False)
    cfg = DataConfig(path=path, combine=mode, combine_turns=4, **split)
    d = prepare_data(tiny_tokenizer, cfg, seed=1, progress=False)
    val = [d.tokens.row_ids[r] for r in d.val[:, 0]]
    assert val == [ref.tokens.row_ids[r] for r in ref.val[:, 0]] and len(val) == 8
    assert [d.val_group_names[g] for g in d.val_groups] == [
        ref.val_group_names[g] for g in ref.val_groups
    ]
    train = [w for r in d.train[:, 0] for w in d.tokens.row_ids[r].split("+")]
    assert sorted(train + val) == sorted(ref.tokens.row_ids)  # every row once, val not combined
    per_source = Counter(int(w.rsplit(":", 1)[1]) % 3 for w in train)  # line i+1 is source i % 3
    assert len(d.train) == (8 if mode == "random" else sum(-(-n // 4) for n in per_source.values()))


def test_prepare_data_refusals(tiny_tokenizer, tmp_path):
    path = _write(tmp_path / "d.jsonl", [{"messages": _conv(0).messages}])
    with pytest.raises(
        UserError,
        match=r"d.jsonl:1: row has no field 'source' for data.combine=same_tag data.combine_tag=source",
    ):
        prepare_data(tiny_tokenizer, DataConfig(path=path, combine="same_tag"), progress=False)
    with pytest.raises(UserError, match="data.turns=multi keeps no training conversation"):
        prepare_data(tiny_tokenizer, DataConfig(path=path, turns="multi"), progress=False)
    with pytest.raises(UserError, match="train_on=last_assistant"):
        DataConfig(path=path, combine="random", train_on="last_assistant")
    with pytest.raises(UserError, match="combine_turns must be >= 2"):
        DataConfig(path=path, combine="random", combine_turns=1)


def test_flan_cot_same_tag_combines_within_a_source(shared_data, tiny_tokenizer):
    path = shared_data / "flan_cot" / "flan_cot_messages.jsonl"
    if not path.exists():
        pytest.skip(f"{path} is absent (the offline data folder)")
    cfg = DataConfig(path=str(path), limit=400, combine="same_tag", combine_turns=3)
    d = prepare_data(tiny_tokenizer, cfg, progress=False)
    sources = {}
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            if line_no > 400:
                break
            sources[line_no] = json.loads(line)["source"]
    assert d.report.counts["combined_into_others"] == 400 - len(d.train)
    assert len(d.train) < 400 / 2
    for r, _, _ in d.train:
        lines = [int(w.rsplit(":", 1)[1]) for w in d.tokens.row_ids[r].split("+")]
        assert len({sources[n] for n in lines}) == 1
