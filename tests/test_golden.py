"""The golden runs of tests/assets/golden/ reproduce exactly (see tests/golden.py).

Recorded before the trainer and data wiring were restructured; every case must keep its per-step
token counts and piece ids exactly, and its losses, gradient norms, learning rates and validation
losses to a relative 1e-5 (tests/golden.py says why not bit for bit across CPUs).
"""

from __future__ import annotations

import json

import pytest

from tests.golden import ASSETS, CASES, differences, run_case

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", list(CASES))
def test_golden_run_reproduces(name, tmp_path):
    want = json.loads((ASSETS / f"{name}.json").read_text())
    assert len(want["steps"]) == 6 and any(
        len(mb) > 1 for s in want["steps"] for mb in s["pieces"]
    ), "the golden case must be non-trivial"
    got = run_case(name, tmp_path)
    assert differences(want, got, name) == []


def test_the_comparison_catches_a_changed_run():
    want = json.loads((ASSETS / "padding.json").read_text())
    got = json.loads(json.dumps(want))
    got["steps"][5]["loss"] *= 1 + 1e-7  # one float32 ulp: another CPU's rounding
    assert differences(want, got) == []
    got["steps"][5]["loss"] *= 1 + 1e-4  # a change of behaviour
    got["steps"][2]["pieces"][0][0] += 1
    assert len(differences(want, got)) == 2
