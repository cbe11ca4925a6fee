"""`train.report_to`: TensorBoard, W&B (offline) and MLflow runs, read back with their own libraries.

One tiny training logs to all three trackers; each test reads one tracker's copy back (TensorBoard's
EventAccumulator, the W&B run file decoded with wandb's own protobuf records, MlflowClient) and
compares it with metrics.jsonl and config.yaml: the same keys and values at the same steps, the
resolved config as hyperparameters. Another run stops on an error and still closes its trackers.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from sft.errors import UserError
from sft.trackers import flat_config, tracked_values, tracker_names

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "sft" / "train.py"
FAULT_TRAIN = ROOT / "tests" / "reliability" / "fault_train.py"
TINY = [
    "model=tiny",
    "data=demo",
    "data.demo_size=48",
    "data.max_length=512",
    "data.overlong=drop",
    "train.progress=false",
    "train.max_steps=3",
    "train.eval_every=2",
]


def tracker_env(tmp: Path, **extra: str) -> dict:
    """W&B offline with its config and cache under `tmp`; MLflow's store left to the run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "MLFLOW_"))}
    env.update(
        WANDB_MODE="offline",
        WANDB_CONFIG_DIR=str(tmp / "wandb-config"),
        WANDB_CACHE_DIR=str(tmp / "wandb-cache"),
        WANDB_DATA_DIR=str(tmp / "wandb-data"),
        OMP_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        **extra,
    )
    return env


def train(script: Path, args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env=env,
        timeout=300,
    )


def metrics_by_step(run_dir: Path) -> dict[int, dict]:
    """metrics.jsonl's values per step (a train line and an eval line of one step merged)."""
    out: dict[int, dict] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        out.setdefault(row["step"], {}).update(tracked_values(row))
    return out


def run_config(run_dir: Path) -> dict:
    from omegaconf import OmegaConf

    return flat_config(OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml")))


def wandb_records(path: Path) -> list:
    """The records of a W&B run file (`run-ID.wandb`), decoded with wandb's own protobuf
    `Record`. The file is a LevelDB-style log: a 7-byte header (":W&B", magic, version), then
    32 KiB blocks of chunks, each with a 7-byte header (crc32, length, type: 1 full, 2 first,
    3 middle, 4 last); a block tail shorter than a chunk header is zero padding."""
    from wandb.proto import wandb_internal_pb2

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    records, pos, pending = [], 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack_from("<IHB", data, pos)
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            records.append(wandb_internal_pb2.Record.FromString(pending))
            pending = b""
    return records


def _key(item) -> str:
    """A history, config or summary item's key (W&B writes it flat or as a nested path)."""
    return item.key or ".".join(item.nested_key)


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("trackers")
    run_dir = tmp / "run"
    args = [*TINY, "collator=packing", "train.report_to=[tensorboard,wandb,mlflow]"]
    proc = train(TRAIN, [*args, f"run_dir={run_dir}"], tracker_env(tmp))
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = metrics_by_step(run_dir)
    assert sorted(steps) == [1, 2, 3] and "eval_loss" in steps[2] and "loss" in steps[3]
    return run_dir


@pytest.mark.slow
def test_wandb_offline_run_holds_the_metrics_and_the_config(tracked_run):
    (path,) = (tracked_run / "wandb").glob("offline-run-*/run-*.wandb")
    records = wandb_records(path)
    kinds = [r.WhichOneof("record_type") for r in records]
    assert "exit" in kinds  # the run was finished (end_training), not left open
    run = next(r.run for r in records if r.HasField("run"))
    assert (run.project, run.display_name) == ("default", "run")
    history: dict[int, dict] = {}
    for r in records:
        if r.HasField("history"):
            items = {_key(i): json.loads(i.value_json) for i in r.history.item}
            history.setdefault(r.history.step.num, {}).update(
                {k: v for k, v in items.items() if not k.startswith("_")}
            )
    assert history == metrics_by_step(tracked_run)
    config = {
        _key(u): json.loads(u.value_json) for r in records if r.HasField("config")
        for u in r.config.update
    }  # fmt: skip
    assert config == json.loads(json.dumps(run_config(tracked_run)))
    assert config["train.max_steps"] == 3 and config["model.name"] == "tiny"
    assert json.loads(config["train.report_to"]) == ["tensorboard", "wandb", "mlflow"]


@pytest.mark.slow
def test_mlflow_run_holds_the_metrics_and_the_config(tracked_run):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tracked_run / 'mlflow' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("default")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "run" and run.info.status == "FINISHED"
    expected: dict[str, list] = {}
    for step, values in sorted(metrics_by_step(tracked_run).items()):
        for key, value in values.items():
            expected.setdefault(key, []).append((step, value))
    assert set(run.data.metrics) == set(expected)
    for key, points in expected.items():
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        assert history == points, key
    config = run_config(tracked_run)
    assert run.data.params == {k: str(v) for k, v in config.items()}
    assert run.data.params["train.max_steps"] == "3"


@pytest.mark.slow
def test_tensorboard_events_hold_the_metrics_and_the_config(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    scalars = EventAccumulator(str(tracked_run / "tb" / "default"))
    scalars.Reload()
    for step, values in metrics_by_step(tracked_run).items():
        for key, value in values.items():
            (event,) = [e for e in scalars.Scalars(key) if e.step == step]
            assert event.value == pytest.approx(value, rel=1e-6), (key, step)  # float32
    (events,) = (tracked_run / "tb" / "default").glob("*/events.out.tfevents.*")
    hparams = EventAccumulator(str(events.parent))
    hparams.Reload()
    content = hparams.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    logged = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert logged["train.max_steps"].number_value == 3
    assert logged["model.name"].string_value == "tiny"
    assert {k for k, v in run_config(tracked_run).items() if v is not None} == set(logged)


@pytest.mark.slow
def test_a_run_stopped_by_an_error_still_closes_its_trackers(tmp_path):
    """Out of memory at step 3 (exit 4): both runs are finished and hold steps 1 and 2; the
    MLflow run lands in the store MLFLOW_TRACKING_URI names."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    env = tracker_env(tmp_path, MLFLOW_TRACKING_URI=uri, SFT_TEST_FAULT="oom@3")
    args = [*TINY, "collator=padding", "train.report_to=[wandb,mlflow]", "run_name=oom"]
    proc = train(FAULT_TRAIN, [*args, f"run_dir={tmp_path / 'run'}"], env)
    assert proc.returncode == 4, proc.stderr[-3000:]
    assert not (tmp_path / "run" / "mlflow").exists()
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("default").experiment_id])
    assert run.info.status == "FINISHED" and run.info.end_time is not None
    history = client.get_metric_history(run.info.run_id, "loss")
    assert sorted(m.step for m in history) == [1, 2]
    (path,) = (tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb")
    assert any(r.HasField("exit") for r in wandb_records(path))


def test_a_missing_tracker_library_is_one_line_before_training(tmp_path):
    (tmp_path / "hide").mkdir()
    (tmp_path / "hide" / "sitecustomize.py").write_text("import sys\nsys.modules['wandb'] = None\n")
    env = tracker_env(tmp_path, PYTHONPATH=str(tmp_path / "hide"))
    args = ["model=tiny", "data=demo", "train.report_to=[tensorboard,wandb]"]
    proc = train(TRAIN, [*args, f"run_dir={tmp_path / 'run'}"], env)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "needs wandb, not installed" in errors[0], proc.stderr[-3000:]
    assert "pip install 'sft[trackers]'" in errors[0]
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


@pytest.mark.parametrize(
    "args,needle",
    [
        (["train.report_to=[tensorboard,neptune]"], "unknown tracker 'neptune'"),
        (["train.tensorboard=false"], "train.tensorboard was replaced by train.report_to"),
    ],
)
def test_a_bad_tracker_setting_is_one_line(tmp_path, args, needle):
    proc = train(TRAIN, ["model=tiny", "data=demo", *args, f"run_dir={tmp_path}"], os.environ)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and needle in errors[0], proc.stderr[-3000:]


def test_tracker_names():
    assert tracker_names(["tensorboard"]) == ["tensorboard"]
    assert tracker_names("wandb") == ["wandb"]
    assert tracker_names("wandb,mlflow,wandb") == ["wandb", "mlflow"]
    assert tracker_names("none") == tracker_names([]) == tracker_names(["none"]) == []
    with pytest.raises(UserError, match="unknown tracker 'tensorbord'"):
        tracker_names(["tensorbord"])


def test_tracked_values_are_the_numbers_of_a_metrics_line():
    row = {"step": 4, "loss": float("nan"), "skipped": True, "tokens": 9, "note": "x"}
    values = tracked_values(row)
    assert values.keys() == {"loss", "skipped", "tokens"} and values["skipped"] == 1


def test_an_old_config_yaml_with_train_tensorboard_still_loads(tmp_path):
    """sft-plan --lengths-from reads a run's config.yaml; runs before train.report_to have
    train.tensorboard there."""
    from omegaconf import OmegaConf

    from sft.cli_config import compose_job
    from sft.config import job_config_from_yaml

    _, text = compose_job(["model=tiny", "data=demo", f"run_dir={tmp_path}"])
    old = OmegaConf.create(text)
    del old.train["report_to"]
    for flag, expected in ((False, []), (True, ["tensorboard"])):
        old.train.tensorboard = flag
        OmegaConf.save(old, tmp_path / "config.yaml")
        assert job_config_from_yaml(tmp_path / "config.yaml").train.report_to == expected
