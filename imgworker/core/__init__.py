"""The job contract and its types: payloads, errors, options, formats, geometry, limits, the one deadline,
the memory budget, URL rules, Gearman function names, configuration. Standard library only (tests/unit/test_layers.py);
every other layer builds on it.
"""
