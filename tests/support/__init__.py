"""Helpers the test modules share: waiting for a condition, building resources, observations.

Test code only; no fixtures live here (those are in the conftest files). What each module
does for I/O is said in its own docstring.
"""
