"""Launched under DeepSpeed ZeRO-3 by the tests: train with the normal recipe, then dump the live weights.

    accelerate launch --config_file launch/accelerate/zero3.yaml --num_processes 2 \
        tests/distributed/zero3_probe.py OVERRIDES...

Runs exactly what `sft/train.py` runs (Recipe.setup, train, which writes metrics.jsonl and exports
final/), then, while the ranks still hold their ZeRO-3 shards, gathers every parameter with
DeepSpeed and writes the full tensors on rank 0 to RUN_DIR/live_weights.safetensors, for the test
to compare with final/. Ends like `sft-train` (sft/engine.py `end_process`), recording the
threads alive if interpreter shutdown ever starts (exit_probe.py, for test_clean_exit.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main(overrides: list[str]) -> int:
    import deepspeed
    from safetensors.torch import save_file

    from sft.cli_config import compose_job
    from sft.trainer import Recipe

    cfg, config_yaml = compose_job(overrides)
    recipe = Recipe(cfg, config_yaml)
    try:
        code = recipe.train()
        acc = recipe.acc
        model = acc.unwrap_model(recipe.model)
        named = dict(model.named_parameters())
        with deepspeed.zero.GatheredParameters(list(named.values()), modifier_rank=None):
            if acc.is_main_process:
                live = {k: v.detach().clone().contiguous() for k, v in named.items()}
                save_file(live, str(Path(cfg.run_dir) / "live_weights.safetensors"))
        acc.wait_for_everyone()
    finally:
        recipe.close()
    _record_after_close(Path(cfg.run_dir))
    return code


def _record_after_close(run_dir: Path) -> None:
    """What close_distributed promises, as this rank sees it (read by test_clean_exit.py)."""
    import os

    import torch
    from deepspeed.runtime.zero import parameter_offload
    from deepspeed.utils import groups

    state = {
        "initialized": torch.distributed.is_initialized(),
        "forward_stack": len(parameter_offload.FWD_MODULE_STACK),
        "world_group": groups._WORLD_GROUP is not None,
    }
    name = f"after_close_rank{os.environ.get('RANK', '0')}.json"
    (run_dir / name).write_text(json.dumps(state))


if __name__ == "__main__":
    import atexit

    from sft.engine import end_process
    from tests.distributed.exit_probe import record_threads

    run_dir = next(a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("run_dir="))
    atexit.register(record_threads, Path(run_dir))
    end_process(main(sys.argv[1:]))
