"""Benchmarks against peer libraries, measured in the same run."""
