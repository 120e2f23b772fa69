"""Benchmarks (`make bench`): numbers are written to build/bench/, never asserted in tests."""
