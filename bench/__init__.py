"""Benchmarks (`make bench`): each `bench/bench_*.py` module writes its results to build/bench/."""
