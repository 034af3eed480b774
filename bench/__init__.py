"""The benchmark suite: `bench/run.py` (see BENCHMARKS.md)."""
