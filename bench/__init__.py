"""Benchmarks: comparisons printed as ratios, run side by side in one process tree.
Not part of the test suite's pass/fail."""
