"""The headline comparison: every engine on the same files and cores (``python -m benchmarks.suite run``)."""
