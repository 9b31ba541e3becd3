"""Benchmarks of issue 6 (``python -m bench --quick``); see docs/benchmarks.md."""
