"""MATH scoring and few-shot exemplars for the offline `sft_math` / `sft_math500` tasks.

lm_eval's own Minerva MATH task cannot be imported here: it requires `math_verify` and
`antlr4-python3-runtime==4.11`, which conflicts with the `antlr4 4.9` that hydra/omegaconf pin.
So the offline task keeps the Minerva prompt format and exemplars and scores with lm_eval's
dependency-free hendrycks_math helpers:

- exemplars: the four worked problems of lm_eval's minerva_math task, read from that task's
  source file with `ast` (the file is never imported);
- answer extraction: the text of "The final answer is X. I hope it is correct." when the model
  writes it (the exemplars end that way), else the content of the last \\boxed{...};
- equivalence: `lm_eval.tasks.hendrycks_math.utils.is_equiv` (string normalisation of LaTeX).

Invariant: a generation scores 1 exactly when its extracted answer is equivalent, under that
normalisation, to the content of the last \\boxed{} of the reference solution.
"""

from __future__ import annotations

import ast
import re
from functools import lru_cache
from pathlib import Path

from lm_eval.tasks.hendrycks_math.utils import is_equiv, last_boxed_only_string, remove_boxed

FINAL_ANSWER = re.compile(r"The final answer is\s*(.+?)\.?\s*I hope it is correct", re.DOTALL)


@lru_cache(maxsize=1)
def fewshot_samples() -> list[dict]:
    """The four Minerva exemplars, as lm_eval's minerva_math task defines them."""
    import lm_eval

    source = Path(lm_eval.__file__).parent / "tasks" / "minerva_math" / "utils.py"
    tree = ast.parse(source.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "list_fewshot_samples":
            for stmt in node.body:
                if isinstance(stmt, ast.Return) and stmt.value is not None:
                    samples = ast.literal_eval(stmt.value)
                    return [{"problem": s["problem"], "solution": s["solution"]} for s in samples]
    raise RuntimeError(f"no list_fewshot_samples() with a literal return value in {source}")


def _strip_dollars(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text.startswith("$") and text.endswith("$"):
        text = text[1:-1].strip()
    return text


def extract_answer(generation: str) -> str | None:
    """The model's final answer: the Minerva closing sentence if present, else the last \\boxed{}."""
    match = FINAL_ANSWER.search(generation)
    if match:
        return _strip_dollars(match.group(1))
    boxed = last_boxed_only_string(generation)
    if boxed is None:
        return None
    try:
        return remove_boxed(boxed)
    except (AssertionError, IndexError):
        return None


def process_results(doc: dict, results: list[str]) -> dict[str, int]:
    """lm_eval `process_results` hook: {"exact_match": 1 if the answer is equivalent else 0}."""
    answer = extract_answer(results[0])
    if answer is None:
        return {"exact_match": 0}
    return {"exact_match": int(bool(is_equiv(answer, doc["answer"])))}
