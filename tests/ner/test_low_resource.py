"""The low-resource tooling: seeded pools shared by `sft-ner prompt --pool-size` and the SFT data
builder, one test sample for `prompt` and `evaluate`, and `sft-ner table`."""

import csv
import json
import random
import shutil

import pytest
import yaml

from sft.data.sources import read_rows
from sft.errors import UserError
from sft.ner.pool import digest, pool_indices, sample_indices
from sft.ner.readers import Sentence, read_sentences, write_spans_jsonl
from sft.ner.sft_data import build_conversations
from sft.ner.table import load_rows, write_outputs

from .conftest import data_file
from .test_cli import run

NAMES = ["Bob", "Sue", "Ann", "Tom", "Eve", "Max", "Ida", "Joe", "Kim", "Lea", "Ned", "Ola"]
TRAIN = [Sentence([name, "visited", f"city{i}"], [(0, 0, "PER")]) for i, name in enumerate(NAMES)]
TEST = [Sentence([name, "met", "someone", str(i)], [(0, 0, "PER")]) for i, name in enumerate(NAMES)]


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    d = tmp_path / "data" / "conll2003" / "spans"
    d.mkdir(parents=True)
    write_spans_jsonl(d / "train.jsonl", TRAIN)
    write_spans_jsonl(d / "test.jsonl", TEST)
    write_spans_jsonl(d / "dev.jsonl", TEST[:2])
    monkeypatch.setenv("SFT_DATA_DIR", str(tmp_path / "data"))
    return d


def test_pool_indices_are_seeded_sorted_nested_and_checked():
    a = pool_indices(1000, 32, seed=5)
    assert a == pool_indices(1000, 32, seed=5) and a == sorted(set(a)) and len(a) == 32
    assert a != pool_indices(1000, 32, seed=6)
    assert set(pool_indices(1000, 8, seed=5)) <= set(a) <= set(pool_indices(1000, 128, seed=5))
    random.seed(123)  # the global random state plays no part
    assert pool_indices(1000, 32, seed=5) == a
    assert pool_indices(5, None) == [0, 1, 2, 3, 4] and pool_indices(5, 5) == [0, 1, 2, 3, 4]
    for bad in (0, -1, 6):
        with pytest.raises(UserError, match="pool size"):
            pool_indices(5, bad)
    # The test sample is the one `sft-ner prompt --n --seed` always drew.
    assert sample_indices(50, 10, "random", 3) == sorted(random.Random(3).sample(range(50), 10))
    assert sample_indices(50, 10, "first") == list(range(10)) and sample_indices(5, 0) == list(
        range(5)
    )
    # A subset is named by its sentences, not by where a file holds them.
    assert digest(TRAIN[:2]) == digest(
        [Sentence(list(s.tokens), list(s.entities)) for s in TRAIN[:2]]
    )
    assert digest(TRAIN[:2]) != digest(TRAIN[1:3]) != digest([Sentence(TRAIN[1].tokens, [])])


def test_builder_pool_is_the_prompt_pool(data_dir, tmp_path, llm_server, capsys):
    url, state = llm_server
    out = tmp_path / "icl"
    code, _, err = run(
        [
            "prompt",
            "--data",
            "conll2003",
            "--n",
            "3",
            "--seed",
            "1",
            "--k",
            "4",
            "--retrieval",
            "random",
            "--pool-size",
            "4",
            "--pool-seed",
            "7",
            "--base-url",
            url,
            "--out",
            str(out),
        ],
        capsys,
    )
    assert code == 0, err
    prompts = [r["body"]["messages"][0]["content"] for r in state["requests"][1:]]
    demo_words = {
        line.split(": ", 1)[1].split()[0]
        for p in prompts
        for line in p.splitlines()
        if line.startswith("The given sentence: ") and "visited" in line
    }
    kept = pool_indices(len(TRAIN), 4, seed=7)
    assert demo_words == {NAMES[i] for i in kept}  # k=4 of a 4-sentence pool: all of it
    # The SFT builder keeps exactly those sentences, under their file indices.
    rows = build_conversations(str(data_dir / "train.jsonl"), pool_size=4, pool_seed=7)
    assert sorted({int(r["id"].split("-")[1]) for r in rows}) == kept
    assert {r["messages"][1]["content"].split()[0].strip("@#") for r in rows} == demo_words
    assert len(rows) == 4 * 4  # four sentences, four CoNLL types
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["pool"] == {
        "file": str(data_dir / "train.jsonl"),
        "size": 4,
        "seed": 7,
        "sentences": 4,
        "digest": digest([TRAIN[i] for i in kept]),
    }
    assert metrics["approach"] == "in-context" and metrics["test_sample"]["n"] == 3
    settings = json.loads((out / "run.json").read_text())["settings"]
    assert settings["pool_size"] == 4 and settings["pool_seed"] == 7
    # --pool-size without a pool to draw from is a one-line error.
    code, _, err = run(
        ["prompt", "--data", "conll2003", "--k", "0", "--pool-size", "4"]
        + ["--base-url", url, "--out", str(tmp_path / "x")],
        capsys,
    )
    assert code == 2 and err.count("\n") == 1 and "--pool-size 4 with --k 0" in err


@pytest.mark.parametrize("plus", ["", "+", "++"])
def test_sft_train_config_takes_pool_size_with_or_without_plus(tmp_path, plus):
    from sft.cli_config import compose

    cfg = compose(
        [
            "data=ner_conll2003",
            f"{plus}data.builder_args.pool_size=32",
            "data.builder_args.pool_seed=3",
            f"run_dir={tmp_path / 'r'}",
        ]
    )
    args = dict(cfg.data.builder_args)
    assert args == {"dataset": "conll2003", "mode": "per_type", "pool_size": 32, "pool_seed": 3}
    assert cfg.data.builder == "sft.ner.sft_data:build_conversations"


def test_data_pipeline_reads_the_pool_through_builder_args(data_dir):
    raw = read_rows(
        str(data_dir / "train.jsonl"),
        builder="sft.ner.sft_data:build_conversations",
        builder_args={"dataset": "conll2003", "pool_size": 3, "pool_seed": 2},
    )
    ids = sorted({int(r["id"].split("-")[1]) for r in raw.rows})
    assert ids == pool_indices(len(TRAIN), 3, seed=2)


def test_evaluate_scores_the_prompt_test_sample_and_table_reads_both(
    data_dir, tmp_path, tiny, llm_server, capsys
):
    url, _ = llm_server
    icl = tmp_path / "icl"
    code, _, err = run(
        ["prompt", "--data", "conll2003", "--n", "2", "--seed", "4", "--k", "2"]
        + ["--retrieval", "random", "--pool-size", "3", "--verify", "--base-url", url]
        + ["--out", str(icl)],
        capsys,
    )
    assert code == 0, err
    model, tok = tiny
    run_dir = tmp_path / "ft"
    model.save_pretrained(run_dir / "final")
    tok.save_pretrained(run_dir / "final")
    (run_dir / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "model": {"name_or_path": "tiny-llama"},
                "collator": {"name": "packing"},
                "train": {"epochs": 3.0, "max_steps": -1},
                "data": {
                    "builder": "sft.ner.sft_data:build_conversations",
                    "builder_args": {"dataset": "conll2003", "mode": "per_type", "pool_size": 3},
                    "path": str(data_dir / "train.jsonl"),
                },
            }
        )
    )
    code, _, err = run(
        ["evaluate", "--run-dir", str(run_dir), "--split", "test", "--n", "2", "--seed", "4"],
        capsys,
    )
    assert code == 0, err
    ft = json.loads((run_dir / "eval" / "ner_test.json").read_text())
    pm = json.loads((icl / "metrics.json").read_text())
    assert ft["test_sample"]["digest"] == pm["test_sample"]["digest"]
    assert ft["test_sample"]["n"] == 2 and ft["approach"] == "fine-tuned"
    assert (
        ft["pool"]["digest"]
        == pm["pool"]["digest"]
        == digest([TRAIN[i] for i in pool_indices(12, 3)])
    )
    assert ft["train"] == {
        "model": "tiny-llama",
        "collator": "packing",
        "epochs": 3.0,
        "max_steps": -1,
    }
    code, out, err = run(["table", str(icl), str(run_dir), "--out", str(tmp_path / "t")], capsys)
    assert code == 0, err
    lines = [ln for ln in out.splitlines() if ln.startswith("| conll2003")]
    assert [ln.split(" | ")[1:4] for ln in lines] == [
        ["in-context", "fake-model GPT-NER k=2 random", "3"],
        ["in-context", "fake-model GPT-NER k=2 random, verified", "3"],
        ["fine-tuned", "tiny-llama fine-tuned (packing, 3 epochs)", "3"],
    ]
    assert "Note:" not in out  # same test sample, same pool
    assert f"conll2003: scored on 2 test sentences (sample {ft['test_sample']['digest']})." in out


def _metrics(path, p, r, f, **extra):
    path.parent.mkdir(parents=True, exist_ok=True)
    base = {"precision": p, "recall": r, "f1": f, "n_sentences": 100}
    path.write_text(json.dumps({**base, **extra}))


def _icl(tmp_path, name, n, f1, verify=False, test="t1", pool=None):
    settings = {
        "dataset": "conll2003",
        "k": 8,
        "retrieval": "sentence",
        "model": "/m/SmolLM2-135M-Instruct",
        "verify": verify,
    }
    extra = {
        "approach": "in-context",
        "settings": settings,
        "test_sample": {"n": 100, "digest": test},
        "pool": {"size": n, "seed": 0, "sentences": n, "digest": pool or f"p{n}"},
    }
    if verify:
        extra["before_verify"] = {"precision": 0.5, "recall": 0.5, "f1": 0.5}
    _metrics(tmp_path / name / "metrics.json", 0.6, 0.4, f1, **extra)
    return tmp_path / name


def _ft(tmp_path, name, n, f1, collator="padding", pool=None, steps=None):
    extra = {
        "approach": "fine-tuned",
        "settings": {"dataset": "conll2003", "model": f"/runs/{name}/final", "verify": False},
        "test_sample": {"n": 100, "digest": "t1"},
        "pool": {"size": n, "seed": 0, "sentences": n, "digest": pool or f"p{n}"},
        "train": {"model": "smollm2", "collator": collator, "max_steps": steps},
    }
    _metrics(tmp_path / name / "eval" / "ner_test.json", 0.25, 0.125, f1, **extra)
    return tmp_path / name


def test_table_from_synthetic_runs(tmp_path, capsys):
    runs = [
        _ft(tmp_path, "ft32", 32, 0.3),
        _icl(tmp_path, "icl32v", 32, 0.48, verify=True),  # also gives the unverified row
        _icl(tmp_path, "icl8", 8, 0.41234),
        _icl(tmp_path, "icl8v", 8, 0.45, verify=True),  # its unverified row: icl8's wins
        _ft(tmp_path, "ft8", 8, 0.1, collator="packing", steps=40),
    ]
    out = tmp_path / "table"
    code, text, err = run(["table", *map(str, runs), "--out", str(out)], capsys)
    assert code == 0, err
    assert (out / "table.md").read_text() == text
    assert text.splitlines()[:9] == [
        "| Dataset | Approach | Setting | N | P | R | F1 |",
        "|---|---|---|---:|---:|---:|---:|",
        "| conll2003 | in-context | SmolLM2-135M-Instruct GPT-NER k=8 sentence | 8 | 60.00 | 40.00 | 41.23 |",
        "| conll2003 | in-context | SmolLM2-135M-Instruct GPT-NER k=8 sentence | 32 | 50.00 | 50.00 | 50.00 |",
        "| conll2003 | in-context | SmolLM2-135M-Instruct GPT-NER k=8 sentence, verified | 8 | 60.00 | 40.00 | 45.00 |",
        "| conll2003 | in-context | SmolLM2-135M-Instruct GPT-NER k=8 sentence, verified | 32 | 60.00 | 40.00 | 48.00 |",
        "| conll2003 | fine-tuned | smollm2 fine-tuned (packing, 40 steps) | 8 | 25.00 | 12.50 | 10.00 |",
        "| conll2003 | fine-tuned | smollm2 fine-tuned (padding) | 32 | 25.00 | 12.50 | 30.00 |",
        "",
    ]
    assert "conll2003: scored on 100 test sentences (sample t1)." in text and "Note:" not in text
    table = json.loads((out / "table.json").read_text())
    assert [r["f1"] for r in table["rows"]] == [0.41234, 0.5, 0.45, 0.48, 0.1, 0.3]
    assert [r["derived"] for r in table["rows"]] == [False, True, False, False, False, False]
    with open(out / "table.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["setting"].endswith("k=8 sentence") and rows[0]["f1"] == "0.41234"
    png = (out / "f1_vs_n.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_table_names_mismatched_samples_and_pools(tmp_path):
    runs = [
        _icl(tmp_path, "a", 32, 0.4, test="t1", pool="pA"),
        _ft(tmp_path, "b", 32, 0.3, pool="pB"),
        _icl(tmp_path, "c", 8, 0.4, test="t2"),
    ]
    rows, notes = load_rows(runs)
    assert len(notes) == 2
    assert "2 different test samples (t1, t2)" in notes[0]
    assert "N=32: the runs saw 2 different sets of training sentences (pA, pB)" in notes[1]
    text = write_outputs(rows, notes, None)
    assert text.count("Note: ") == 2


def test_table_refuses_a_folder_that_is_no_run(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, out, err = run(["table", str(tmp_path / "empty")], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "neither an `sft-ner prompt --out` folder" in err


def test_low_resource_preset_composes(tmp_path):
    from sft.cli_config import compose_job

    job, _ = compose_job(
        [
            "experiment=ner_conll2003_low_resource",
            "data.builder_args.pool_size=8",
            "collator=packing",
            "collator.pack_length=1408",
            "train.micro_batch_size=1",
            f"run_dir={tmp_path / 'r'}",
        ]
    )
    assert job.data.builder_args["pool_size"] == 8 and job.data.val_fraction == 0.0
    assert job.data.builder == "sft.ner.sft_data:build_conversations"


def test_shipped_files_give_one_pool_whichever_format():
    """`sft-ner prompt` reads spans/train.jsonl, data=ner_conll2003 reads bio_2col/train.txt."""
    spans = read_sentences(data_file("conll2003", "spans", "train.jsonl"))
    bio = read_sentences(data_file("conll2003", "bio_2col", "train.txt"))
    kept = pool_indices(len(spans), 32, seed=0)
    assert len(spans) == len(bio) and pool_indices(len(bio), 32, seed=0) == kept
    assert digest([spans[i] for i in kept]) == digest([bio[i] for i in kept])


def test_verified_runs_of_one_extraction_give_its_row_once(tmp_path):
    zero = _icl(tmp_path, "zero", 32, 0.0, verify=True)  # zero-shot and few-shot verification
    few = _icl(tmp_path, "few", 32, 0.4, verify=True)  # of the same generations
    m = json.loads((few / "metrics.json").read_text())
    m["settings"]["verify_k"], m["settings"]["verify_demos"] = 2, "entity"
    (few / "metrics.json").write_text(json.dumps(m))
    rows, notes = load_rows([zero, few])
    assert [(r.setting.split("sentence")[-1], r.f1, r.derived) for r in rows] == [
        ("", 0.5, True),
        (", verified", 0.0, False),
        (", verified (verify-k=2, entity demos)", 0.4, False),
    ]
    assert notes == []
    m["before_verify"]["f1"] = 0.3  # not the same extractions: both rows, and a note
    (few / "metrics.json").write_text(json.dumps(m))
    rows, notes = load_rows([zero, few])
    assert sorted(r.f1 for r in rows if r.derived) == [0.3, 0.5]
    assert len(notes) == 1 and "2 verified runs give different scores" in notes[0]


def test_an_earlier_table_json_adds_the_rows_no_run_gives(tmp_path, capsys):
    first = [
        _icl(tmp_path, "icl8", 8, 0.4),
        _ft(tmp_path, "ft8", 8, 0.2),
        _ft(tmp_path, "ft32", 32, 0.3),
    ]
    code, _, err = run(["table", *map(str, first), "--out", str(tmp_path / "t1")], capsys)
    assert code == 0, err
    for run_dir in first:  # the folders are gone: only the table remains
        shutil.rmtree(run_dir)
    later = [_ft(tmp_path, "ft512", 512, 0.5), _ft(tmp_path, "ft32b", 32, 0.35)]
    rows, notes = load_rows([tmp_path / "t1" / "table.json", *later])
    assert [(r.approach, r.n, r.f1) for r in rows] == [
        ("in-context", 8, 0.4),
        ("fine-tuned", 8, 0.2),
        ("fine-tuned", 32, 0.35),  # the run given replaces the table's row of its key
        ("fine-tuned", 512, 0.5),
    ]
    assert rows[0].run == str(tmp_path / "icl8")  # a table row names the run it came from
    assert len(notes) == 1 and "F1 30.00" in notes[0] and "replaced by" in notes[0]
    (tmp_path / "t2").mkdir()
    (tmp_path / "t2" / "table.json").write_text('{"rows": [{"dataset": "x"}]}')
    code, out, err = run(["table", str(tmp_path / "t2" / "table.json")], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1 and "lacks a field" in err
