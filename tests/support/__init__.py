"""Helpers shared by the tests and benchmarks: corpus, worker processes, fixtures."""
