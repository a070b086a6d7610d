"""The job contract and its types: payloads, errors, options, formats, geometry, limits, configuration. Standard
library only; every other layer builds on it.
"""
