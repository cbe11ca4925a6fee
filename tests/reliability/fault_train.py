"""`sft/train.py` with the tests' fault hooks (SFT_TEST_FAULT); see tests/reliability/faults.py."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sft.train import main
from tests.reliability.faults import FaultHooks

if __name__ == "__main__":
    main(hooks=FaultHooks.from_env())
