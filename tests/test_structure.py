"""The shape the code keeps: one batching component, a short trainer, files of readable size.

These guard the structure the project was given (a loop that schedules, a step you can read,
padding vs packing decided in one package); they fail when a change quietly undoes it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SFT = ROOT / "sft"
NAMES = ("padding", "packing", "padding_free", "leaky_packing")
# a comparison with, or membership test of, a batching option's name
_ALT = "|".join(NAMES)
COMPARES = re.compile(
    rf"""(==|!=|\bin\b|\bnot in\b)\s*\(?\s*["']({_ALT})["']|["']({_ALT})["']\s*(==|!=)"""
)


def _sources(exclude: str | None = None) -> list[Path]:
    return [
        p
        for p in sorted(SFT.rglob("*.py"))
        if exclude is None or exclude not in p.relative_to(SFT).parts
    ]


def test_no_module_outside_batching_tests_the_collator_name():
    offenders = []
    for path in _sources(exclude="batching"):
        text = path.read_text()
        for n, line in enumerate(text.splitlines(), 1):
            if COMPARES.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert offenders == [], "\n".join(offenders)


def test_the_guard_itself_catches_a_comparison():
    assert COMPARES.search('if cfg.collator.name == "packing":')
    assert COMPARES.search('kind in ("padding", "padding_free")')
    assert not COMPARES.search('label = "padding"')


def _function_lines(path: Path) -> dict[str, int]:
    tree = ast.parse(path.read_text())
    return {
        n.name: n.end_lineno - n.lineno + 1
        for n in ast.walk(tree)
        if isinstance(n, ast.FunctionDef)
    }


def test_the_trainer_stays_readable():
    trainer = SFT / "trainer.py"
    assert len(trainer.read_text().splitlines()) <= 350
    funcs = _function_lines(trainer)
    assert funcs["train"] <= 40 and funcs["train_step"] <= 60, funcs


def test_no_source_file_over_400_lines():
    long = {
        str(p.relative_to(ROOT)): n
        for p in _sources()
        if (n := len(p.read_text().splitlines())) > 400
    }
    assert long == {}


def test_every_trainer_attribute_is_set_in_init():
    tree = ast.parse((SFT / "trainer.py").read_text())
    recipe = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Recipe")
    late = []
    for fn in recipe.body:
        if not isinstance(fn, ast.FunctionDef) or fn.name == "__init__":
            continue
        for node in ast.walk(fn):
            targets = node.targets if isinstance(node, ast.Assign) else []
            targets += [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
            for t in targets:
                if isinstance(t, ast.Attribute) and getattr(t.value, "id", None) == "self":
                    late.append(f"{fn.name}: self.{t.attr}")
    assert late == ["train: self.step"]  # the step counter advances; nothing else is set late
