"""The ZeRO-3 final export is a plain HF checkpoint holding the trained (gathered) weights.

The run itself is the `zero3_packing_run` fixture: 2 processes under DeepSpeed ZeRO-3, which
shards every parameter, so final/ is only right if the export gathered the shards.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def test_final_export_loads_and_equals_live_weights(zero3_packing_run, tiny_model_dir):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    live = load_file(str(zero3_packing_run / "live_weights.safetensors"))
    final = AutoModelForCausalLM.from_pretrained(zero3_packing_run / "final")
    AutoTokenizer.from_pretrained(zero3_packing_run / "final")
    exported = dict(final.named_parameters())
    assert sorted(exported) == sorted(live)
    for name, tensor in live.items():
        assert tensor.numel() > 0, f"{name}: the live copy is an empty ZeRO-3 placeholder"
        assert torch.equal(exported[name].detach(), tensor), name
    start = dict(AutoModelForCausalLM.from_pretrained(tiny_model_dir).named_parameters())
    assert any(
        not torch.equal(start[n].detach(), live[n]) for n in live
    )  # training changed the weights
