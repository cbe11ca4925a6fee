import json
from pathlib import Path

import pytest
import yaml

from sft.ner import cli
from sft.ner.readers import Sentence, write_spans_jsonl

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "ner"

TRAIN = [
    Sentence(["Bob", "visited", "Rome"], [(0, 0, "PER"), (2, 2, "LOC")]),
    Sentence(["Acme", "hired", "Sue"], [(0, 0, "ORG"), (2, 2, "PER")]),
    Sentence(["rain", "fell"], []),
]
TEST = [
    Sentence(["Peter", "met", "Ann"], [(0, 0, "PER"), (2, 2, "PER")]),
    Sentence(["stocks", "fell", "in", "Tokyo"], [(3, 3, "LOC")]),
]


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    d = tmp_path / "data" / "conll2003" / "spans"
    d.mkdir(parents=True)
    write_spans_jsonl(d / "train.jsonl", TRAIN)
    write_spans_jsonl(d / "test.jsonl", TEST)
    write_spans_jsonl(d / "dev.jsonl", TEST[:1])
    monkeypatch.setenv("SFT_DATA_DIR", str(tmp_path / "data"))
    return d


def run(argv, capsys):
    try:
        code = cli.main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_score_prints_json(tmp_path, capsys):
    gold, pred = tmp_path / "g.jsonl", tmp_path / "p.jsonl"
    write_spans_jsonl(gold, TEST)
    write_spans_jsonl(
        pred, [Sentence(TEST[0].tokens, [(0, 0, "PER")]), Sentence(TEST[1].tokens, [(3, 3, "ORG")])]
    )
    code, out, _ = run(["score", "--gold", str(gold), "--pred", str(pred)], capsys)
    report = json.loads(out)
    assert code == 0
    assert report["precision"] == 0.5 and report["recall"] == pytest.approx(1 / 3)
    assert report["f1"] == pytest.approx(0.4)
    assert set(report["per_type"]) == {"PER", "LOC", "ORG"}


@pytest.mark.parametrize(
    "pred_rows,needle",
    [
        ([TEST[0]], "has 2 sentences but"),
        ([TEST[1], TEST[0]], "line 1: tokens differ"),
    ],
)
def test_score_mismatch_is_one_line_exit_2(tmp_path, capsys, pred_rows, needle):
    gold, pred = tmp_path / "g.jsonl", tmp_path / "p.jsonl"
    write_spans_jsonl(gold, TEST)
    write_spans_jsonl(pred, pred_rows)
    code, out, err = run(["score", "--gold", str(gold), "--pred", str(pred)], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and needle in err


def test_usage_errors_are_one_line(capsys):
    for argv in (
        ["score", "--gold"],
        ["prompt", "--bogus"],
        ["nope"],
        ["prompt", "--data", "conll2003", "--out", "x"],
    ):
        code, _, err = run(argv, capsys)
        assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), (argv, err)


def test_prompt_through_a_local_server(data_dir, tmp_path, llm_server, capsys):
    url, state = llm_server
    out_dir = tmp_path / "out"
    code, _, err = run(
        [
            "prompt",
            "--data",
            "conll2003",
            "--split",
            "test",
            "--n",
            "0",
            "--k",
            "2",
            "--retrieval",
            "random",
            "--verify",
            "--base-url",
            url,
            "--out",
            str(out_dir),
        ],
        capsys,
    )
    assert code == 0, err
    metrics = json.loads((out_dir / "metrics.json").read_text())
    # The fake labeler marks capitalized words for every type: PER right twice, LOC right once.
    assert metrics["per_type"]["PER"]["tp"] == 2 and metrics["per_type"]["LOC"]["tp"] == 1
    assert metrics["n_sentences"] == 2 and metrics["stats"]["verify_asked"] == 12
    assert metrics["before_verify"]["f1"] == metrics["f1"]  # the fake server never says no
    rows = [json.loads(line) for line in (out_dir / "predictions.jsonl").read_text().splitlines()]
    assert rows[0]["tokens"] == TEST[0].tokens and "generated" in rows[0] and "gold" in rows[0]
    assert state["requests"][0]["path"] == "/v1/models"  # no --model-name: the server's first
    assert state["requests"][1]["body"]["model"] == "fake-model"
    first = state["requests"][1]["body"]["messages"][0]["content"]
    assert first.count("The given sentence:") == 3
    assert "Bob visited Rome" in first or "Acme hired Sue" in first  # demos come from train


def test_prompt_config_file_errors(data_dir, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "data: conll2003\nk: 2\nretrieval: entity\nbase_url: http://127.0.0.1:9\nout: x\n"
    )
    code, _, err = run(["prompt", "--config", str(cfg)], capsys)
    assert code == 2 and "--retrieval entity needs --entity-encoder" in err
    cfg.write_text("data: conll2003\nkk: 2\n")
    code, _, err = run(["prompt", "--config", str(cfg)], capsys)
    assert code == 2 and "unknown options ['kk']" in err


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("prompt_*.yaml")), ids=lambda p: p.name)
def test_shipped_prompt_configs_bind_to_the_cli(path):
    parser = cli.build_parser()
    args = cli._with_config(parser, ["prompt", "--config", str(path), "--out", "o"], str(path))
    cfg = yaml.safe_load(path.read_text())
    for key, value in cfg.items():
        assert getattr(args, key) == value
    assert args.out == "o"


def test_evaluate_a_run_dir(data_dir, tmp_path, tiny, capsys):
    model, tok = tiny
    run_dir = tmp_path / "run"
    model.save_pretrained(run_dir / "final")
    tok.save_pretrained(run_dir / "final")
    (run_dir / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "data": {
                    "builder": "sft.ner.sft_data:build_conversations",
                    "builder_args": {"dataset": "conll2003", "mode": "per_type"},
                    "path": str(data_dir / "train.jsonl"),
                }
            }
        )
    )
    code, _out, err = run(
        ["evaluate", "--run-dir", str(run_dir), "--split", "test", "--limit", "1"], capsys
    )
    assert code == 0, err
    result = json.loads((run_dir / "eval" / "ner_test.json").read_text())
    assert result["n_sentences"] == 1 and result["settings"]["mode"] == "per_type"
    assert result["stats"]["prompts"] == 4  # one sentence, four types, zero-shot
    assert {"precision", "recall", "f1", "per_type"} <= set(result)
    assert (run_dir / "eval" / "ner_test_predictions.jsonl").is_file()
    # --data overrides; a run without a model is a clear error.
    code, _, err = run(["evaluate", "--run-dir", str(tmp_path / "empty")], capsys)
    assert code == 2 and "holds no HF model" in err


def test_prompt_on_a_custom_file_uses_it_as_pool_minus_the_query(tmp_path, llm_server, capsys):
    url, state = llm_server
    data = tmp_path / "mine.jsonl"
    rows = [
        Sentence(["Aspirin", "helps"], [(0, 0, "DRUG")]),
        Sentence(["Take", "Ibuprofen"], [(1, 1, "DRUG")]),
    ]
    write_spans_jsonl(data, rows)
    types = tmp_path / "t.yaml"
    types.write_text("DRUG: {name: drug, description: Drug entities are medicines.}\n")
    code, _, err = run(
        [
            "prompt",
            "--data",
            str(data),
            "--types-file",
            str(types),
            "--k",
            "1",
            "--base-url",
            url,
            "--out",
            str(tmp_path / "o"),
        ],
        capsys,
    )
    assert code == 0, err
    prompts = "\n".join(r["body"]["messages"][0]["content"] for r in state["requests"][1:])
    assert "The given sentence: Take Ibuprofen\nThe labeled sentence: Take @@Ibuprofen##" in prompts
    assert "The given sentence: Aspirin helps\nThe labeled sentence: @@Aspirin## helps" in prompts
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert metrics["settings"]["dataset"] == "custom" and metrics["per_type"]["DRUG"]["tp"] == 1
