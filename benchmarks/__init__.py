"""Benchmarks: ``python -m benchmarks.suite run`` (docs/performance.md has the figures and how to read them).

One module per measured thing: bench_imgworker (end to end through gearmand), bench_pyvips (the bare-loop
reference), bench_sharp and bench_thumbor (peers, installed by setup_peers.sh), bench_decode (the JPEG
decode limit), bench_dispatch (a no-op job through gearmand against a PHP worker).
"""
