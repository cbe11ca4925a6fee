"""Benchmark evaluation through lm-evaluation-harness, offline on local data copies.

`evaluate()` (sft.eval.runner) is the entry point for code (the training loop at checkpoints);
`sft-eval` (sft.eval.cli) for the shell. Task configs: sft/eval/tasks/; docs/evaluation.md.
"""

from __future__ import annotations

from typing import Any


def evaluate(*args: Any, **kwargs: Any) -> dict[str, dict]:
    """See `sft.eval.runner.evaluate` (imported lazily: lm_eval takes seconds to import)."""
    from sft.eval.runner import evaluate as _evaluate

    return _evaluate(*args, **kwargs)


__all__ = ["evaluate"]
