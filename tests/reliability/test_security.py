"""Security: no remote code unless asked, nothing unpickled on resume, no secret in the run dir.

- trust_remote_code is false in every shipped model config and in the loaders' defaults;
- every `torch.load` in our code passes weights_only=True, and resuming a checkpoint calls
  `torch.load` only with weights_only=True (the model is safetensors; scheduler and RNG are JSON);
- credentials from the environment (W&B key, hub tokens) never land in config.yaml, logs,
  metrics, summaries or checkpoints, even when the config interpolates them.
"""

from __future__ import annotations

import ast
import inspect
import json
import shutil
from pathlib import Path

import pytest

from sft.cli_config import CONFIG_DIR, compose_job
from sft.config import ModelConfig
from sft.models.build import load_model

from .conftest import ROOT, SINGLE, TINY, run_train

SECRETS = {
    "HF_TOKEN": "hf_T0kenThatMustNeverLeak42",
    "HUGGING_FACE_HUB_TOKEN": "hf_AnotherHubT0ken99",
    "WANDB_API_KEY": "wandbKeyThatMustNeverLeak0123456789",
}


@pytest.mark.parametrize(
    "model", sorted(p.stem for p in (Path(CONFIG_DIR) / "model").glob("*.yaml"))
)
def test_trust_remote_code_is_off_unless_set(model):
    cfg, _ = compose_job([f"model={model}", "run_dir=/tmp/unused"])
    assert cfg.model.trust_remote_code is False
    assert inspect.signature(load_model).parameters["trust_remote_code"].default is False
    assert ModelConfig().trust_remote_code is False  # load_tokenizer reads it from model.*


def test_no_code_path_forces_remote_code_or_unsafe_loading():
    offenders = []
    for path in sorted((ROOT / "sft").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            kw = {k.arg: k.value for k in node.keywords}
            if (
                "trust_remote_code" in kw
                and isinstance(kw["trust_remote_code"], ast.Constant)
                and kw["trust_remote_code"].value is True
            ):
                offenders.append(f"{path}:{node.lineno} trust_remote_code=True")
            name = ast.unparse(node.func)
            if name.endswith("torch.load") or name == "pickle.load" or name == "pickle.loads":
                ok = (
                    "weights_only" in kw
                    and isinstance(kw["weights_only"], ast.Constant)
                    and kw["weights_only"].value is True
                )
                if not ok:
                    offenders.append(f"{path}:{node.lineno} {name} without weights_only=True")
    assert not offenders, offenders


AUDIT = """
import json, os, torch
_load = torch.load
def _audited(*args, **kwargs):
    with open(os.environ["SFT_TORCH_LOAD_LOG"], "a") as f:
        f.write(json.dumps({"file": str(args[0] if args else kwargs.get("f")),
                            "weights_only": kwargs.get("weights_only")}) + "\\n")
    return _load(*args, **kwargs)
torch.load = _audited
"""


@pytest.mark.slow
def test_resume_loads_nothing_with_pickle(single_reference, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(single_reference, run)
    assert not list(run.rglob("custom_checkpoint_*")), "an object would be unpickled on resume"
    (tmp_path / "audit").mkdir()
    (tmp_path / "audit" / "sitecustomize.py").write_text(AUDIT)
    log = tmp_path / "torch_load.jsonl"
    args = [a for a in SINGLE if not a.startswith("train.max_steps")] + ["train.max_steps=11"]
    args.append("train.allow_config_change=true")  # one step more than the checkpoint's run
    r = run_train(
        run,
        *args,
        env={"PYTHONPATH": f"{tmp_path / 'audit'}:{ROOT}", "SFT_TORCH_LOAD_LOG": str(log)},
    )
    assert r.returncode == 0 and f"resumed from {run}/checkpoints/step-10" in r.stdout, r.stderr[
        -3000:
    ]
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert any(c["file"].endswith("optimizer.bin") for c in calls)  # the audit saw the resume
    unsafe = [c for c in calls if c["weights_only"] is False]
    assert not unsafe, f"torch.load with weights_only=False during resume: {unsafe}"


@pytest.mark.slow
def test_no_secret_is_written_anywhere(tmp_path):
    run = tmp_path / "run"
    # the config even interpolates a token: it must be redacted wherever the config is written
    r = run_train(
        run,
        *TINY,
        "train.max_steps=2",
        "train.save_every=1",
        "train.report_to=[tensorboard,wandb,mlflow]",  # the trackers get the config too
        "run_name=${oc.env:HF_TOKEN}",
        env={**SECRETS, "WANDB_MODE": "offline"},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    files = [p for p in run.rglob("*") if p.is_file()]
    assert any(p.name == "config.yaml" for p in files) and any(
        p.name == "optimizer.bin" for p in files
    )
    leaks = [
        (p, name)
        for p in files
        for name, value in SECRETS.items()
        if value.encode() in p.read_bytes()
    ]
    leaks += [
        ("stdout/stderr", name) for name, value in SECRETS.items() if value in r.stdout + r.stderr
    ]
    assert not leaks, leaks
    assert "run_name: <redacted:HF_TOKEN>" in (run / "config.yaml").read_text()
