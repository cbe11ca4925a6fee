"""Run outputs made from the live model: an HF model folder, and benchmarks on a saved one.

Invariant: `export_hf` writes a folder that `AutoModelForCausalLM.from_pretrained` loads as a
plain model (LoRA merged, use_cache on for generation) with the tokenizer beside it; every rank
calls it (the weights are gathered collectively), rank 0 writes.
"""

from __future__ import annotations

from pathlib import Path


def export_hf(accelerator, model, tokenizer, out: Path) -> None:
    """Collective: gather the weights and save an HF model folder + tokenizer (rank 0 writes)."""
    state_dict = accelerator.get_state_dict(model)
    plain = accelerator.unwrap_model(model)
    if accelerator.is_main_process:
        if hasattr(plain, "merge_and_unload"):  # LoRA: merge so the folder loads as a plain model
            plain.load_state_dict(state_dict)
            plain = plain.merge_and_unload()
            state_dict = plain.state_dict()
        plain.config.use_cache = True
        plain.save_pretrained(out, state_dict=state_dict, safe_serialization=True)
        plain.config.use_cache = False
        tokenizer.save_pretrained(out)
    accelerator.wait_for_everyone()


def run_benchmarks(accelerator, target: Path, tasks: str, limit: int, step: int) -> None:
    """lm_eval benchmarks on a committed checkpoint or final/ (rank 0; the others wait)."""
    if accelerator.is_main_process:
        from sft.eval import evaluate

        results = evaluate(target, tasks, limit or None)
        shown = results if len(str(results)) < 300 else "done"
        print(f"[sft] step {step}: benchmarks {shown} (run_dir/eval/)", flush=True)
    accelerator.wait_for_everyone()
