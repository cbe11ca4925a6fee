"""The wheels a lent GPU machine lacks, carried there in `.gpu_wheels/` (git-ignored).

    .venv/bin/python benchmarks/gpu_wheels.py [--extra NAME==VERSION ...]     # here: fill it

The GPU machine has torch, transformers, accelerate, peft, numpy, pyyaml and pytest but no
hydra-core, omegaconf or antlr4 (../shared/docs/ENVIRONMENT.md), which the config composition
imports. `fetch_wheels` saves them at the versions of this venv, for Python 3.12 (pure Python:
py3-none-any); antlr4-python3-runtime 4.9.3 has no wheel on the registry and is built here.
`install_wheels` (called by gpu_check.py there) installs them with pip --target, or unzips them
where pip is missing. The device tool's `carry` takes the folder (0.4 MiB).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WHEELS = ROOT / ".gpu_wheels"
# what `sft.cli_config` / `sft.config` import and the GPU machine lacks
CARRIED = ("hydra-core", "omegaconf", "antlr4-python3-runtime")
PURE = "-py3-none-any.whl"
# the platforms the device README lists for the GPU machine (pip matches each exactly)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64")
PLATFORMS += ("manylinux2014_x86_64", "manylinux1_x86_64")


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def _wheel_key(name: str) -> str:
    """A distribution's name as wheel file names spell it (hydra-core -> hydra_core)."""
    return "".join("_" if c in "-_." else c for c in name).lower()


def _download(spec: str, dest: Path) -> bool:
    """A wheel of `spec` for CPython 3.12 on x86-64 Linux from the registry (False: none)."""
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
    cmd += ["--python-version", "3.12", "--implementation", "cp", "-d", str(dest)]
    cmd += [f"--platform={p}" for p in PLATFORMS]
    return subprocess.run([*cmd, spec], check=False, capture_output=True).returncode == 0


def _build(spec: str, dest: Path) -> str | None:
    """Build a wheel of `spec` from its sdist here; None when it worked, else why not."""
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-binary", ":all:"]
    proc = subprocess.run(
        [*cmd, "-w", str(dest), spec], check=False, capture_output=True, text=True
    )
    return None if proc.returncode == 0 else _last_line(proc.stderr)


def fetch_wheels(dest: Path, extra: list[str]) -> int:
    """Here, with network: the carried packages at this venv's versions, as wheels for Python
    3.12. One with no wheel on the registry (antlr4-python3-runtime 4.9.3 is an sdist) is built
    here with `pip wheel`, and kept only when pure Python. One version of each package."""
    from importlib import metadata

    dest.mkdir(exist_ok=True)
    for spec in [f"{n}=={metadata.version(n)}" for n in CARRIED] + list(extra):
        name, _, version = spec.partition("==")
        key = _wheel_key(name)
        have = [p for p in dest.glob("*.whl") if p.name.lower().startswith(key + "-")]
        for p in have:
            if p.name.split("-")[1] != version:
                p.unlink()  # two versions of one package stop the whole install
        if any(p.name.split("-")[1] == version for p in have):
            print(f"[gpu-wheels] {spec}: already in {dest.name}/")
            continue
        if not _download(spec, dest):
            why = _build(spec, dest)
            made = list(dest.glob(f"{key}-{version}-*.whl"))
            if why is not None or not made or not all(p.name.endswith(PURE) for p in made):
                print(f"[gpu-wheels] {spec}: no wheel for Python 3.12 ({why})", file=sys.stderr)
                return 1
        print(f"[gpu-wheels] {spec}: saved")
    wheels = list(dest.glob("*.whl"))
    size = sum(p.stat().st_size for p in wheels) / 2**20
    print(f"[gpu-wheels] {dest}: {len(wheels)} wheels, {size:.2f} MiB (carry: {dest.name})")
    return 0


def install_wheels(wheels: Path, target: Path, mode: str, timeout: float) -> dict:
    """Install the carried wheels into `target` and put it first on sys.path and PYTHONPATH."""
    import importlib.util

    files = sorted(wheels.glob("*.whl"))
    missing = [m for m in ("hydra", "omegaconf", "antlr4") if importlib.util.find_spec(m) is None]
    found = {"wheels": [p.name for p in files], "missing_before": missing}
    if mode == "never" or (mode == "auto" and not missing):
        return {"status": "skipped", "reason": "not needed: hydra and omegaconf import", **found}
    if not files:
        status = "failed" if missing else "skipped"
        return {
            "status": status,
            "reason": f"no wheels in {wheels.name}/ (make gpu-wheels)",
            **found,
        }
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile"]
    cmd += ["--no-cache-dir", "--upgrade", "--target", str(target), *map(str, files)]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:  # no pip, or a pip that refuses: a pure-Python wheel is a zip
        import zipfile

        found["pip_error"] = _last_line(proc.stderr)
        if not all(p.name.endswith("-none-any.whl") for p in files):  # only those unzip as is
            return {"status": "failed", "reason": found["pip_error"], **found}
        for p in files:
            with zipfile.ZipFile(p) as z:
                z.extractall(target)
        found["installed_by"] = "zipfile"
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    return {"status": "passed", "target": str(target), **found}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="save the wheels the GPU machine lacks")
    p.add_argument("--dest", type=Path, default=WHEELS)
    p.add_argument("--extra", action="append", default=[], help="another NAME==VERSION to carry")
    args = p.parse_args(argv)
    return fetch_wheels(args.dest, args.extra)


if __name__ == "__main__":
    sys.exit(main())
