"""Benchmarks: each prints ours vs a plain baseline, measured in one run on the same machine."""
