"""HumanEval scoring: run each completed program with its tests in a separate Python process.

lm_eval's humaneval task scores with Hugging Face `evaluate`'s "code_eval" metric, which is fetched
from the hub at import time and so cannot load offline. This module does the same job locally:
program = prompt + completion (cut at the closing ``` fence) + the problem's tests + `check(entry)`;
it passes when a fresh `python -I` process runs it to exit code 0 within the time limit.

Invariant: nothing runs unless HF_ALLOW_CODE_EVAL=1 (set by `sft-eval --allow-code-execution`,
the same switch code_eval uses). Programs run in an empty temporary directory, in their own
process group (killed whole on timeout), with capped memory and CPU time. This is a guard against
accidents, not a security sandbox: run untrusted models inside a container.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from sft.errors import UserError

TIMEOUT_S = 10.0
MEMORY_LIMIT_BYTES = 4 * 1024**3


def _launcher(cpu_s: int) -> str:
    """`python -c` code that caps memory and CPU time, then runs program.py as __main__."""
    return (
        "import resource, runpy\n"
        "try:\n"
        f"    resource.setrlimit(resource.RLIMIT_AS, ({MEMORY_LIMIT_BYTES}, {MEMORY_LIMIT_BYTES}))\n"
        f"    resource.setrlimit(resource.RLIMIT_CPU, ({cpu_s}, {cpu_s}))\n"
        "except (ValueError, OSError):\n"
        "    pass\n"
        "runpy.run_path('program.py', run_name='__main__')\n"
    )


def program_passes(program: str, timeout_s: float = TIMEOUT_S) -> bool:
    """True when `program` exits with status 0 within `timeout_s` seconds."""
    if os.environ.get("HF_ALLOW_CODE_EVAL") != "1":
        raise UserError(
            "humaneval executes model-written code; rerun sft-eval with --allow-code-execution"
        )
    with tempfile.TemporaryDirectory(prefix="sft-code-") as work:
        path = Path(work) / "program.py"
        path.write_text(program, encoding="utf-8")
        proc = subprocess.Popen(
            [sys.executable, "-I", "-c", _launcher(int(timeout_s) + 1)],
            cwd=work,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={"PATH": os.environ.get("PATH", ""), "PYTHONHASHSEED": "0"},
            start_new_session=True,
        )
        try:
            return proc.wait(timeout=timeout_s) == 0
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return False


def build_program(doc: dict, completion: str) -> str:
    """prompt + completion (up to a closing ``` fence) + tests + the call of `check`."""
    fence = completion.find("```")
    if fence != -1:
        completion = completion[:fence]
    return f"{doc['prompt']}{completion}\n\n{doc['test']}\n\ncheck({doc['entry_point']})\n"


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    """lm_eval `process_results` hook for greedy decoding: {"pass@1": 1.0 or 0.0}."""
    return {"pass@1": float(program_passes(build_program(doc, results[0])))}
