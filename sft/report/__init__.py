"""Comparison report of training runs: `sft-report RUN_DIR ... --out DIR` (see sft.report.build)."""
