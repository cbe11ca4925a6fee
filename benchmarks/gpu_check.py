"""The GPU run, prepared: one command for a lent GPU machine, checked end to end on CPU.

    python3 benchmarks/gpu_check.py [--out DIR] [--budget 510]      # on the GPU machine, as it is
    .venv/bin/python benchmarks/gpu_check.py --dry-run               # the same pipeline on CPU
    .venv/bin/python benchmarks/gpu_wheels.py                        # here, once: .gpu_wheels/

Parts, in order, each with its own time cap inside `--budget` seconds; a part that would not fit
what is left is recorded as "skipped: budget" (so is every later one that cannot fit):

    wheels        the carried wheels of `.gpu_wheels/` (hydra-core, omegaconf, antlr4: what the
                  config composition imports and the GPU machine lacks) installed into a temporary
                  --target folder that every later part finds first (sys.path, PYTHONPATH)
    environment   device name, memory, capability, driver; python, torch, CUDA, transformers, ...
                  versions; a digest of the code that ran
    matmul        the bf16 n x n x n matrix rate of this very machine (CUDA events): the peak that
                  every MFU below is measured against
    gpu_tests     `pytest -m gpu` over the test files that hold gpu-marked tests (junit XML)
    bench:SETUP   the trainer's own Recipe and train_step, one child process per setup
                  (benchmarks/gpu_setup.py): a random ~1.2 B Llama-3.2-1B-shaped model in bf16
                  autocast, synthetic rows; padding vs packing, sdpa vs torch varlen (vs
                  flex_attention and flash_attention_2 where they can run), full vs chunked loss
                  (`loss.impl=`, recorded "not available" when the config has no such key)

Per setup, over the measured steps (after the warmup steps):

    tokens_per_s     real (non-pad) tokens / wall seconds of the steps (synchronised)
    mfu              model FLOPs / seconds / the measured matmul rate, with model FLOPs =
                     6 x non-embedding params x real tokens                 (8 x with checkpointing)
                     + 12 x layers x heads x head_dim x causal pairs        (16 x with checkpointing)
                       inside every sample (n (n + 1) / 2 for a sample of n tokens)
                     + 6 x hidden x vocab x target tokens (the LM head and its backward; 8 x when
                       the loss in force is chunked, which recomputes the head in backward)
    mfu_computed     the same over the positions computed (pads included, attention over the
                     whole padded row): what the hardware did, not what the step needed
    mfu_datasheet    mfu against the datasheet's dense bf16 rate, for the GPUs it knows
    peak_memory_mib  torch.cuda.max_memory_allocated over the setup's process (CPU: peak RSS)

One JSON (`gpu_check.json`) is written under `--out` (default $OUT, else ./gpu_out) after every
part, so a run stopped from outside still leaves what it measured; the junit XML of the tests
lands beside it. `--dry-run` runs every part on CPU with a 2-layer model and a few steps:
CUDA-only backends are recorded as skipped, and the modules the GPU machine lacks (datasets,
deepspeed, flash_attn, gguf) are made unimportable in every process it starts, so a dependency
on one of them fails here first. Exit code 0 when no part failed (skips are not failures).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gpu_setup import LLAMA_1B, TINY, ModelShape, step_flops, write_json
from gpu_wheels import WHEELS, install_wheels

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = 1
# importable in the trainer's path here, absent on the GPU machine (../shared/docs/ENVIRONMENT.md)
DEVICE_MISSING = ("datasets", "deepspeed", "flash_attn", "gguf")
# dense bf16 rate of the datasheet (TFLOP/s), by a substring of torch's device name
DATASHEET_BF16_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0}
BF16_MFU_TARGET = 0.45  # issue 14: packing with torch varlen for the ~1B model


# --------------------------------------------------------------------------- what is measured


@dataclasses.dataclass(frozen=True)
class Profile:
    """Sizes of one kind of run: the GPU run, or the CPU dry run of the same pipeline."""

    model: ModelShape
    max_length: int
    padding_micro_batch: int  # samples per micro-batch
    packing_micro_batch: int  # packs of max_length tokens per micro-batch
    samples: int
    warmup: int
    steps: int
    matmul_n: int
    budget_s: float
    caps: dict[str, float]  # the most seconds each part may take
    min_start_s: float  # a bench setup does not start with less than this left


GPU = Profile(
    model=LLAMA_1B,
    max_length=4096,
    padding_micro_batch=8,
    packing_micro_batch=4,
    samples=4000,
    warmup=3,
    steps=10,
    matmul_n=8192,
    budget_s=510.0,
    caps={"wheels": 60, "environment": 30, "matmul": 30, "gpu_tests": 150, "bench": 75},
    min_start_s=35.0,
)
DRY = Profile(
    model=TINY,
    max_length=512,
    padding_micro_batch=4,
    packing_micro_batch=2,
    samples=200,
    warmup=1,
    steps=2,
    matmul_n=512,
    budget_s=420.0,
    caps={"wheels": 60, "environment": 30, "matmul": 30, "gpu_tests": 120, "bench": 60},
    min_start_s=15.0,
)


@dataclasses.dataclass(frozen=True)
class Setup:
    name: str
    collator: str
    attn: str
    loss_impl: str | None = None  # `loss.impl=`; None = the config's default
    checkpointing: bool = False  # model.gradient_checkpointing=true
    needs_cuda: bool = False
    needs_module: str | None = None
    cap_s: float | None = None  # overrides the profile's bench cap (compiling backends)


# in order of importance: the budget cuts from the end
SETUPS = (
    Setup("packing_varlen", "packing", "varlen"),
    Setup("padding_sdpa", "padding", "sdpa"),
    Setup("loss_full", "packing", "varlen", loss_impl="full"),
    Setup("loss_chunked", "packing", "varlen", loss_impl="chunked"),
    Setup("packing_sdpa", "packing", "sdpa"),
    Setup("packing_flex", "packing", "flex_attention", needs_cuda=True, cap_s=100),
    Setup("packing_varlen_ckpt", "packing", "varlen", checkpointing=True),  # what it costs
    Setup(
        "packing_flash2", "packing", "flash_attention_2", needs_cuda=True, needs_module="flash_attn"
    ),
)


def overrides_for(setup: Setup, profile: Profile, run_dir: Path) -> list[str]:
    """The sft-train command line of a setup (the model and data inputs are replaced, see above)."""
    micro = (
        profile.packing_micro_batch if setup.collator == "packing" else profile.padding_micro_batch
    )
    out = [
        "model=tiny",  # its tokenizer (byte-level, no download); the model itself is built below
        "model.dtype=bf16",
        f"model.attn_implementation={setup.attn}",
        f"collator={setup.collator}",
        "data=demo",
        f"data.max_length={profile.max_length}",
        "data.val_fraction=0.0",
        f"train.micro_batch_size={micro}",
        "train.grad_accum=1",
        f"train.max_steps={profile.warmup + profile.steps}",
        "train.progress=false",
        _no_trackers(),
        "train.resume_from=none",
        "train.save_every=0",
        f"run_dir={run_dir}",
    ]
    if setup.loss_impl is not None:
        out.append(f"loss.impl={setup.loss_impl}")
    if setup.checkpointing:
        out.append("model.gradient_checkpointing=true")
    return out


def _no_trackers() -> str:
    """The override that turns experiment trackers off, in whichever form the config has."""
    from sft.config import TrainConfig

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return "train.report_to=[]" if "report_to" in names else "train.tensorboard=false"


# --------------------------------------------------------------------------- parts run here


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def _tree_sha256() -> str:
    """A digest of sft/, benchmarks/, tests/ and configs/: which code ran, without .git."""
    h = hashlib.sha256()
    for top in ("sft", "benchmarks", "tests", "configs"):
        for p in sorted((ROOT / top).rglob("*")):
            if (
                p.is_file()
                and p.suffix in (".py", ".yaml", ".jinja")
                and "__pycache__" not in p.parts
            ):
                h.update(str(p.relative_to(ROOT)).encode())
                h.update(p.read_bytes())
    return h.hexdigest()[:16]


def environment(_timeout: float) -> dict:
    from importlib import metadata

    import torch

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    import importlib.util

    hydra = importlib.util.find_spec("hydra")  # the carried one, if the wheels part installed it
    cuda = torch.cuda.is_available()
    device: dict[str, Any] = {"cuda": cuda, "count": torch.cuda.device_count() if cuda else 0}
    if cuda:
        props = torch.cuda.get_device_properties(0)
        device |= {
            "name": props.name,
            "capability": f"{props.major}.{props.minor}",
            "memory_gib": round(props.total_memory / 2**30, 1),
            "multiprocessors": props.multi_processor_count,
        }
        if shutil.which("nvidia-smi"):
            q = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                check=False,
                capture_output=True,
                text=True,
                timeout=30,
            )
            device["driver"] = q.stdout.strip().splitlines()[0] if q.returncode == 0 else None
    else:
        device |= {"name": f"CPU ({platform.processor() or platform.machine()})"}
    device["cpu_count"] = os.cpu_count()
    git = None
    if (ROOT / ".git").exists() and shutil.which("git"):
        g = subprocess.run(
            ["git", "rev-parse", "HEAD"], check=False, cwd=ROOT, capture_output=True, text=True
        )
        git = g.stdout.strip() or None
    names = ("torch", "transformers", "accelerate", "peft", "numpy", "hydra-core", "omegaconf")
    versions = {n: version(n) for n in names} | {
        "python": platform.python_version(),
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "pytest": version("pytest"),
    }
    return {
        "status": "passed",
        "device": device,
        "versions": versions,
        "hydra_from": str(Path(hydra.origin).parent) if hydra and hydra.origin else None,
        "code": {"git_commit": git, "tree_sha256": _tree_sha256()},
    }


def matmul_rate(n: int, _timeout: float, reps: int = 10, warmup: int = 3) -> dict:
    """TFLOP/s of n x n x n bf16 products on this machine: the peak the MFU is measured against."""
    import torch

    cuda = torch.cuda.is_available()
    dev = "cuda" if cuda else "cpu"
    a = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    for _ in range(warmup):
        a @ b
    if cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        for _ in range(reps):
            a @ b
        end.record()
        torch.cuda.synchronize()
        seconds = start.elapsed_time(end) / 1000
    else:
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        seconds = time.perf_counter() - t0
    del a, b
    if cuda:
        torch.cuda.empty_cache()
    tflops = 2 * n**3 * reps / seconds / 1e12
    return {"status": "passed", "dtype": "bf16", "n": n, "reps": reps, "tflops": round(tflops, 3)}


def gpu_test_files() -> list[str]:
    """Test files that hold gpu-marked tests (collecting only these: the others may import
    what the GPU machine lacks)."""
    found = []
    for p in sorted((ROOT / "tests").rglob("test_*.py")):
        if "pytest.mark.gpu" in p.read_text(encoding="utf-8"):
            found.append(str(p.relative_to(ROOT)))
    return found


BLOCKING_PRELUDE = (
    "import os, sys\n"
    "for m in filter(None, os.environ.get('GPU_CHECK_BLOCK', '').split(',')):\n"
    "    sys.modules[m] = None  # absent, as on the GPU machine\n"
)


def run_bounded(cmd: list[str], timeout: float, log: Path, env: dict) -> tuple[int | None, float]:
    """(exit code or None on timeout, seconds); output to `log`; the whole process group killed
    at the timeout (compile workers included)."""
    import signal

    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            rc: int | None = proc.wait(timeout=max(timeout, 1))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = None
    return rc, time.perf_counter() - t0


def _tail(path: Path, lines: int = 40) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def gpu_tests(out: Path, env: dict, work: Path, timeout: float) -> dict:
    import xml.etree.ElementTree as ET

    files = gpu_test_files()
    if not files:
        return {"status": "skipped", "reason": "no gpu-marked tests found"}
    junit = out / "gpu_tests.xml"
    code = BLOCKING_PRELUDE + "import pytest\nsys.exit(pytest.main(sys.argv[1:]))\n"
    args = ["-m", "gpu", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}", *files]
    log = work / "gpu_tests.log"
    rc, _ = run_bounded([sys.executable, "-c", code, *args], timeout, log, env)
    res: dict[str, Any] = {"files": files, "exit_code": rc, "junit": junit.name}
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    failed, skip_reasons = [], set()
    if junit.exists():
        root = ET.parse(junit).getroot()
        for suite in root.iter("testsuite"):
            for k in counts:
                counts[k] += int(suite.get(k, 0))
        for case in root.iter("testcase"):
            for child in case:
                if child.tag in ("failure", "error"):
                    failed.append(f"{case.get('classname')}::{case.get('name')}")
                elif child.tag == "skipped":
                    skip_reasons.add((child.get("message") or "")[:120])
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    res |= {"counts": counts, "failed": failed[:20], "skip_reasons": sorted(skip_reasons)[:10]}
    if rc is None:
        return res | {
            "status": "failed",
            "reason": f"timeout after {timeout:.0f} s",
            "log_tail": _tail(log),
        }
    if rc != 0 or counts["failures"] or counts["errors"]:
        return res | {"status": "failed", "reason": f"pytest exit {rc}", "log_tail": _tail(log)}
    if counts["passed"] == 0:
        return res | {"status": "skipped", "reason": "; ".join(sorted(skip_reasons)) or "none ran"}
    return res | {"status": "passed"}


# --------------------------------------------------------------------------- bench parts (here)


def summarize(res: dict, peak_tflops: float | None, device_name: str) -> dict:
    """Throughput, MFU and memory of a setup's measured steps (warmup steps left out)."""
    steps = [s for s in res.get("steps", []) if not s["warmup"]]
    shape = res.get("shape")
    if not steps or shape is None:
        return {}
    chunked = res.get("loss_impl") == "chunked"
    gc = bool(res.get("gradient_checkpointing"))
    seconds = sum(s["seconds"] for s in steps)
    needed = computed = 0.0
    for s in steps:
        n, c = step_flops(
            shape,
            real=s["tokens"],
            positions=s["positions"],
            pairs=s["pairs"],
            computed_pairs=s["computed_pairs"],
            targets=s["targets"],
            gc=gc,
            chunked=chunked,
        )
        needed, computed = needed + n, computed + c
    tokens = sum(s["tokens"] for s in steps)
    positions = sum(s["positions"] for s in steps)
    out: dict[str, Any] = {
        "measured_steps": len(steps),
        "seconds": round(seconds, 4),
        "step_s_median": round(sorted(s["seconds"] for s in steps)[len(steps) // 2], 4),
        "tokens": tokens,
        "positions": positions,
        "targets": sum(s["targets"] for s in steps),
        "tokens_per_s": round(tokens / seconds, 1),
        "positions_per_s": round(positions / seconds, 1),
        "computed_over_real": round(positions / max(tokens, 1), 4),
        "model_tflops_per_s": round(needed / seconds / 1e12, 4),
        "computed_tflops_per_s": round(computed / seconds / 1e12, 4),
        "peak_memory_mib": res.get("peak_memory_mib"),
        "loss_first": res["steps"][0]["loss"],
        "loss_last": res["steps"][-1]["loss"],
        "all_finite": all(s["finite"] for s in res["steps"]),
    }
    if peak_tflops:
        out["mfu"] = round(needed / seconds / 1e12 / peak_tflops, 4)
        out["mfu_computed"] = round(computed / seconds / 1e12 / peak_tflops, 4)
    sheet = next((v for k, v in DATASHEET_BF16_TFLOPS.items() if k in device_name), None)
    if sheet and res.get("device", "").startswith("cuda"):
        out["mfu_datasheet"] = round(needed / seconds / 1e12 / sheet, 4)
    return out


class Check:
    """The run's record, its clock and budget, and the JSON written after every part."""

    def __init__(self, args, profile: Profile, out: Path) -> None:
        self.profile = profile
        self.budget = args.budget if args.budget else profile.budget_s
        self.out = out
        self.path = out / "gpu_check.json"
        self.t0 = time.perf_counter()
        self.record: dict[str, Any] = {
            "schema": SCHEMA,
            "kind": "gpu_check",
            "dry_run": bool(args.dry_run),
            "command": [Path(sys.executable).name, *sys.argv],
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "budget_s": self.budget,
            "profile": {
                k: v for k, v in dataclasses.asdict(profile).items() if k not in ("model", "caps")
            }
            | {"caps_s": profile.caps, "model": profile.model.name},
            "device": None,
            "versions": None,
            "steps": {},
            "parts": {},
            "summary": {},
            "comparisons": {},
        }
        self.write()

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.t0) - 5.0  # 5 s kept to write the end

    def write(self) -> None:
        self.record["seconds"] = round(time.perf_counter() - self.t0, 1)
        failed = [k for k, v in self.record["steps"].items() if v.startswith("failed")]
        self.record["ok"] = not failed
        self.record["failed"] = failed
        write_json(self.path, self.record)

    def part(
        self,
        name: str,
        cap: float,
        fn,
        min_s: float = 3.0,
        skip: tuple[str, str] | None = None,
    ) -> dict:
        """Run `fn(seconds allowed)` as part `name`, or record `skip` = (status, reason), or
        "skipped: budget" when less than `min_s` seconds are left."""
        t = time.perf_counter()
        allowed = min(cap, self.left())
        if skip is not None:
            res = {"status": skip[0], "reason": skip[1]}
        elif allowed < min_s:
            res = {"status": "skipped", "reason": "budget"}
        else:
            try:
                res = fn(allowed)
            except Exception as e:  # noqa: BLE001 - a failed part is recorded, the next one runs
                res = {"status": "failed", "reason": f"{type(e).__name__}: {e}"[:300]}
            res["budget_s"] = round(allowed, 1)
        res["seconds"] = round(time.perf_counter() - t, 2)
        status, reason = res["status"], res.get("reason")
        self.record["steps"][name] = f"{status}: {reason}" if reason else status
        self.record["parts"][name] = res
        print(
            f"[gpu-check] {name}: {self.record['steps'][name]} ({res['seconds']:.1f} s)", flush=True
        )
        self.write()
        return res


def loss_impl_available(overrides: list[str]) -> str | None:
    """None when the config takes `loss.impl=`, else why not (one line)."""
    from sft.cli_config import compose_job
    from sft.errors import UserError

    try:
        compose_job(overrides)
    except UserError as e:
        if "loss" in str(e):  # any other error is the bench's to show
            return str(e)
    return None


def bench(
    setup: Setup, profile: Profile, work: Path, env: dict, block: list[str], timeout: float
) -> dict:
    """One setup in its own process (benchmarks/gpu_setup.py) (a clean CUDA context, a peak of its own, a hard
    timeout); its per-step results come back in a JSON file, also after a timeout."""
    spec = {
        "setup": setup.name,
        "overrides": overrides_for(setup, profile, work / f"run_{setup.name}"),
        "model": dataclasses.asdict(profile.model),
        "samples": profile.samples,
        "max_length": profile.max_length,
        "warmup": profile.warmup,
        "block": block,
        "result": str(work / f"{setup.name}.json"),
    }
    spec_path = work / f"{setup.name}.spec.json"
    spec_path.write_text(json.dumps(spec))
    log = work / f"{setup.name}.log"
    rc, _ = run_bounded(
        [sys.executable, str(Path(__file__).with_name("gpu_setup.py")), str(spec_path)],
        timeout,
        log,
        env,
    )
    try:
        res = json.loads(Path(spec["result"]).read_text())
    except (OSError, json.JSONDecodeError):
        res = {"steps": []}
    res = {"overrides": spec["overrides"], "exit_code": rc, **res}
    measured = sum(1 for s in res["steps"] if not s["warmup"])
    if rc is None:
        res |= {
            "status": "failed",
            "reason": f"timeout after {timeout:.0f} s ({measured} steps measured)",
        }
    elif rc != 0:
        res |= {
            "status": "failed",
            "reason": res.get("error") or f"exit {rc}: {_last_line(log.read_text())}",
        }
    elif measured < profile.steps:
        res |= {"status": "failed", "reason": f"{measured} of {profile.steps} steps measured"}
    else:
        res |= {"status": "passed"}
    if res["status"] != "passed":
        res["log_tail"] = _tail(log)
    return res


def comparisons(summary: dict) -> dict:
    """Packing vs padding, chunked vs full loss: ratios of the summaries of this run."""
    out: dict[str, Any] = {}
    pad = summary.get("padding_sdpa")
    for name in ("packing_varlen", "packing_sdpa", "packing_flex"):
        s = summary.get(name)
        if pad and s:
            out[f"{name}_vs_padding_sdpa"] = {
                "tokens_per_s": round(s["tokens_per_s"] / pad["tokens_per_s"], 4),
                "ideal": pad["computed_over_real"],
                "achieved_of_ideal": round(
                    s["tokens_per_s"] / pad["tokens_per_s"] / pad["computed_over_real"], 4
                ),
                "peak_memory": round(s["peak_memory_mib"] / pad["peak_memory_mib"], 4),
            }
    full, chunked = summary.get("loss_full"), summary.get("loss_chunked")
    if full and chunked:
        out["loss_chunked_vs_full"] = {
            "tokens_per_s": round(chunked["tokens_per_s"] / full["tokens_per_s"], 4),
            "peak_memory": round(chunked["peak_memory_mib"] / full["peak_memory_mib"], 4),
            "peak_memory_saved_mib": round(full["peak_memory_mib"] - chunked["peak_memory_mib"], 1),
        }
    varlen = summary.get("packing_varlen")
    if varlen and "mfu" in varlen:
        out["packing_varlen_mfu_target"] = {
            "target": BF16_MFU_TARGET,
            "mfu": varlen["mfu"],
            "met": varlen["mfu"] >= BF16_MFU_TARGET,
        }
    return out


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="tiny model, few steps, on CPU")
    p.add_argument("--out", default=None, help="output folder (default: $OUT, else ./gpu_out)")
    p.add_argument(
        "--budget", type=float, default=0, help="seconds for the whole run (0 = profile's)"
    )
    p.add_argument(
        "--setups",
        default="",
        help="comma-separated subset of: " + ",".join(s.name for s in SETUPS),
    )
    p.add_argument("--steps", type=int, default=0, help="measured steps per setup (0 = profile's)")
    p.add_argument("--warmup", type=int, default=-1, help="warmup steps per setup (-1 = profile's)")
    p.add_argument("--skip-tests", action="store_true", help="leave out the gpu-marked tests")
    p.add_argument("--wheels", default=str(WHEELS), help="folder of carried wheels")
    p.add_argument(
        "--install-wheels",
        choices=("auto", "always", "never"),
        default=None,
        help="auto: when hydra/omegaconf do not import (the default); always: the dry run's default",
    )
    p.add_argument(
        "--simulate-device",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"make {','.join(DEVICE_MISSING)} unimportable in every process it starts "
        "(default: on with --dry-run)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    profile = DRY if args.dry_run else GPU
    profile = dataclasses.replace(
        profile,
        steps=args.steps or profile.steps,
        warmup=profile.warmup if args.warmup < 0 else args.warmup,
    )
    simulate = args.dry_run if args.simulate_device is None else args.simulate_device
    block = list(DEVICE_MISSING) if simulate else []
    for m in block:
        sys.modules[m] = None
    out = Path(args.out or os.environ.get("OUT") or "gpu_out").resolve()
    out.mkdir(parents=True, exist_ok=True)
    chosen = [s for s in SETUPS if not args.setups or s.name in args.setups.split(",")]
    check = Check(args, profile, out)
    check.record["simulated_missing_modules"] = block
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    site = work / "site"
    caps = profile.caps
    mode = args.install_wheels or ("always" if args.dry_run else "auto")
    check.part("wheels", caps["wheels"], lambda t: install_wheels(Path(args.wheels), site, mode, t))
    env = dict(os.environ)
    paths = [str(site)] if site.exists() else []
    env["PYTHONPATH"] = os.pathsep.join([*paths, str(ROOT), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    env |= {"GPU_CHECK_BLOCK": ",".join(block), "PYTHONUNBUFFERED": "1"}
    env |= {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    sys.path.insert(0, str(ROOT))
    info = check.part("environment", caps["environment"], environment)
    check.record["device"], check.record["versions"] = info.get("device"), info.get("versions")
    cuda = bool((info.get("device") or {}).get("cuda"))
    device_name = (info.get("device") or {}).get("name", "")
    peak = check.part("matmul", caps["matmul"], lambda t: matmul_rate(profile.matmul_n, t))
    peak_tflops = peak.get("tflops")
    check.record["peak_matmul_tflops"] = peak_tflops
    check.part(
        "gpu_tests",
        caps["gpu_tests"],
        lambda t: gpu_tests(out, env, work, t),
        min_s=20,
        skip=("skipped", "not asked (--skip-tests)") if args.skip_tests else None,
    )
    loss_missing: dict[str, str | None] = {}
    for setup in chosen:
        skip = skip_reason(setup, cuda, loss_missing, lambda s: overrides_for(s, profile, work))
        res = check.part(
            f"bench:{setup.name}",
            setup.cap_s or caps["bench"],
            lambda t, s=setup: bench(s, profile, work, env, block, t),
            min_s=profile.min_start_s,
            skip=skip,
        )
        s = summarize(res, peak_tflops, device_name)
        if s:
            s["attn"] = res.get("attn")
            s["attention_calls"] = res.get("attention_calls")
            check.record["summary"][setup.name] = s
        check.write()
    check.record["comparisons"] = comparisons(check.record["summary"])
    check.record["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    check.write()
    shutil.rmtree(work, ignore_errors=True)
    print_table(check.record)
    print(f"[gpu-check] {check.path} ({check.record['seconds']:.0f} s); ok={check.record['ok']}")
    return 0 if check.record["ok"] else 1


def skip_reason(setup: Setup, cuda: bool, loss_missing: dict, overrides) -> tuple[str, str] | None:
    """(status, reason) when `setup` cannot run here, else None; `loss_missing` caches, per
    loss.impl value, why the config refuses it (None: it takes it)."""
    if setup.needs_cuda and not cuda:
        return ("skipped", "needs CUDA")
    if setup.needs_module and importlib_missing(setup.needs_module):
        return ("skipped", f"{setup.needs_module} is not installed")
    if setup.loss_impl is None:
        return None
    if setup.loss_impl not in loss_missing:
        try:
            loss_missing[setup.loss_impl] = loss_impl_available(overrides(setup))
        except Exception as e:  # noqa: BLE001 - e.g. hydra missing: the bench itself fails then
            loss_missing[setup.loss_impl] = str(e) if "loss" in str(e) else None
    why = loss_missing[setup.loss_impl]
    return None if why is None else ("not available", f"loss.impl={setup.loss_impl}: {why}")


def importlib_missing(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):
        return True


def print_table(record: dict) -> None:
    rows = record["summary"]
    if not rows:
        return
    print(
        f"{'setup':<20} {'tokens/s':>10} {'MFU':>7} {'MFU comp':>8} {'peak MiB':>10} {'attn':>16}"
    )
    for name, s in rows.items():
        mfu = f"{s['mfu']:.3f}" if "mfu" in s else "-"
        comp = f"{s['mfu_computed']:.3f}" if "mfu_computed" in s else "-"
        print(
            f"{name:<20} {s['tokens_per_s']:>10.1f} {mfu:>7} {comp:>8} "
            f"{s['peak_memory_mib'] or 0:>10.0f} {s['attn']:>16}"
        )


if __name__ == "__main__":
    sys.exit(main())
