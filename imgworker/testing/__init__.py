"""Helpers to run imgworker's parts locally: a throwaway gearmand for tests, benchmarks and the demo.
"""
