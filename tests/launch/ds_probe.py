"""Run under `accelerate launch --config_file launch/accelerate/<zero3*>.yaml`: train a tiny model
for two optimizer steps and write the DeepSpeed config as DeepSpeed finally used it, plus the losses.

Like the trainer, it sets gradient clipping itself (the JSON says "auto") and uses gloo on CPU.
Usage: ds_probe.py RESULT_JSON
"""

from __future__ import annotations

import json
import sys

import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs
from transformers import LlamaConfig, LlamaForCausalLM


def main(out: str) -> None:
    acc = Accelerator(
        gradient_accumulation_steps=2, kwargs_handlers=[InitProcessGroupKwargs(backend="gloo")]
    )
    plugin = acc.state.deepspeed_plugin
    if plugin is None:
        raise SystemExit(
            "no DeepSpeed plugin: was ACCELERATE_USE_CPU set, or a non-DeepSpeed config?"
        )
    plugin.deepspeed_config["gradient_clipping"] = 0.5
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            use_cache=False,
        )
    )
    data = torch.randint(0, 64, (12, 8), generator=torch.Generator().manual_seed(0))
    loader = torch.utils.data.DataLoader(data, batch_size=3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model, optimizer, loader = acc.prepare(model, optimizer, loader)
    losses = []
    for batch in loader:
        with acc.accumulate(model):
            loss = model(input_ids=batch, labels=batch).loss
            acc.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
        losses.append(loss.item())
    with open(out, "w") as f:
        json.dump({"config": plugin.deepspeed_config, "losses": losses}, f, default=str)
    acc.end_training()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
