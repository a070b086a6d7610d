"""Fixtures for the service tests: worker processes, a file-store root, corpus paths."""
