"""Fixtures for s3:// tests: a real S3-compatible HTTP server (moto server mode) on a free loopback port."""
