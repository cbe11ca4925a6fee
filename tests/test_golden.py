"""The golden runs of tests/assets/golden/ reproduce exactly (see tests/golden.py).

Recorded before the trainer and data wiring were restructured; every case must keep its per-step
losses, gradient norms, learning rates, token counts, piece ids and validation losses bit for bit.
"""

from __future__ import annotations

import json

import pytest

from tests.golden import ASSETS, CASES, run_case

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", list(CASES))
def test_golden_run_reproduces(name, tmp_path):
    want = json.loads((ASSETS / f"{name}.json").read_text())
    assert len(want["steps"]) == 6 and any(
        len(mb) > 1 for s in want["steps"] for mb in s["pieces"]
    ), "the golden case must be non-trivial"
    got = run_case(name, tmp_path)
    for w, g in zip(want["steps"], got["steps"]):
        assert g == w, f"{name}: step {w['step']} differs"
    assert got == want
