"""`evaluate()`: run benchmarks on a model, a run dir or a checkpoint with lm-evaluation-harness.

    from sft.eval import evaluate
    evaluate("runs/lima-packing", ["gsm8k", "mmlu"], limit=50)          # -> runs/.../eval/
    evaluate("runs/lima-packing/checkpoints/step-200", ["gsm8k"], limit=50)  # -> eval/step-200/

The model is loaded once into lm_eval's `HFLM`; each benchmark is one `lm_eval.simple_evaluate`
call on the offline task configs (or lm_eval's stock tasks with `hub=True`). The chat template is
applied, with few-shot examples as earlier turns, whenever the tokenizer has one, unless
`chat_template=False`.

Invariant: nothing is scored here; prompts, generation, filters and metrics are lm_eval's (or the
task hooks referenced by the shipped YAMLs). Code runs only when `allow_code_execution=True`.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

from sft.errors import UserError
from sft.eval.paths import data_root, locate
from sft.eval.registry import Benchmark, resolve_benchmark
from sft.eval.results import summary_entry, task_record, update_summary, write_json


def _check_ifeval_prerequisites() -> None:
    missing = [m for m in ("langdetect", "immutabledict") if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(
            f"ifeval needs {' and '.join(missing)}: pip install langdetect immutabledict"
        )
    import nltk

    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
    except LookupError:
        raise UserError(
            "ifeval needs NLTK's punkt_tab data: run `python -m nltk.downloader punkt_tab` on a "
            "machine with internet and copy nltk_data/ here (or set NLTK_DATA)"
        ) from None


def _build_lm(model: str, tokenizer: str, batch_size: int, device: str | None, dtype: str):
    import torch
    from lm_eval.models.huggingface import HFLM

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    kwargs: dict = {"tokenizer": tokenizer, "batch_size": batch_size, "device": device}
    kwargs["dtype"] = dtype
    adapter = Path(model) / "adapter_config.json"
    if adapter.is_file() and not (Path(model) / "config.json").is_file():
        import json

        base = json.loads(adapter.read_text())["base_model_name_or_path"]
        return HFLM(pretrained=base, peft=model, **kwargs)
    return HFLM(pretrained=model, **kwargs)


def evaluate(
    model_path: str | os.PathLike,
    tasks: list[str] | str,
    limit: float | None = None,
    *,
    out_dir: str | os.PathLike | None = None,
    batch_size: int = 8,
    num_fewshot: int | None = None,
    device: str | None = None,
    dtype: str = "auto",
    chat_template: bool | None = None,
    allow_code_execution: bool = False,
    data: str | os.PathLike | None = None,
    hub: bool = False,
    log_samples: bool = False,
    max_gen_toks: int | None = None,
    seed: int = 1234,
) -> dict[str, dict]:
    """Evaluate `model_path` on `tasks`; write `<out>/<task>.json` + `<out>/summary.json`.

    model_path: run dir, `RUN_DIR/final`, `RUN_DIR/checkpoints/step-N` (with `model/`), any HF
        model dir, or a hub id (with `hub=True`).
    tasks: benchmark names (`gsm8k, mmlu, bbh, ifeval, humaneval, math, math500`, or one member
        `mmlu_<subject>` / `bbh_<task>`), as a list or a comma-separated string.
    limit: documents per (sub-)task; None for the full test sets.
    out_dir: results folder; defaults to the run's `eval/` (required for a bare model).
    num_fewshot: overrides every task's shot count (tasks fixed at zero-shot stay zero-shot).
    chat_template: None = apply it when the tokenizer has one.
    data: benchmark data folder (default $SFT_EVAL_DATA, else ../shared/data).
    hub: use lm_eval's stock tasks, which download their data (needs internet).
    max_gen_toks: caps generated tokens per answer (quick runs).
    Returns {task: summary entry}.
    """
    import lm_eval
    from lm_eval.tasks import TaskManager

    from sft.eval.task_configs import group_members, write_task_configs

    names = [t for t in (tasks.split(",") if isinstance(tasks, str) else tasks) if t.strip()]
    if not names:
        raise UserError("no eval task given; pass e.g. --tasks gsm8k,mmlu")
    target = locate(model_path)
    out = Path(out_dir) if out_dir is not None else target.out_dir
    if out is None:
        raise UserError(f"{model_path} is a model, not a run dir: pass --out DIR for the results")
    root = data_root(data)
    benches: list[Benchmark] = []
    members = group_members(None if hub else root, hub=hub)
    for name in names:
        bench = resolve_benchmark(name, members)
        if bench not in benches:
            benches.append(bench)
    unsafe = [b.name for b in benches if b.unsafe]
    if unsafe and not allow_code_execution:
        raise UserError(
            f"{', '.join(unsafe)} runs model-written code; add --allow-code-execution to allow it"
        )
    if unsafe:
        os.environ["HF_ALLOW_CODE_EVAL"] = "1"
    if any(b.name == "ifeval" for b in benches):
        _check_ifeval_prerequisites()

    lm = _build_lm(target.model, target.tokenizer, batch_size, device, dtype)
    has_template = bool(getattr(lm.tokenizer, "chat_template", None))
    if chat_template and not has_template:
        raise UserError(
            f"the tokenizer of {target.model} has no chat template; drop --chat-template"
        )
    apply_template = has_template if chat_template is None else chat_template

    entries: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="sft-eval-tasks-") as tmp:
        if hub:
            manager = TaskManager()
        else:
            write_task_configs(benches, root, Path(tmp))
            manager = TaskManager(include_path=tmp)
        for bench in benches:
            task = bench.hub_task if hub else bench.task
            shots = num_fewshot if num_fewshot is not None else (bench.num_fewshot if hub else None)
            results = lm_eval.simple_evaluate(
                model=lm,
                tasks=[task],
                num_fewshot=shots,
                limit=limit,
                task_manager=manager,
                apply_chat_template=apply_template,
                fewshot_as_multiturn=apply_template,
                log_samples=log_samples,
                gen_kwargs={"max_gen_toks": max_gen_toks} if max_gen_toks else None,
                confirm_run_unsafe_code=allow_code_execution,
                bootstrap_iters=1000,
                random_seed=seed,
                numpy_random_seed=seed,
                torch_random_seed=seed,
                fewshot_random_seed=seed,
            )
            if results is None:  # not the main process of a multi-process run
                continue
            entry = summary_entry(
                results,
                bench,
                task,
                model=target.model,
                limit=limit,
                chat_template=apply_template,
                source="hub" if hub else "offline",
            )
            write_json(out / f"{bench.name}.json", task_record(results, task, entry, log_samples))
            update_summary(out, [entry])
            entries[bench.name] = entry
    return entries
