"""The job model: pure Python, no I/O.

Attribute tables, job states and their allowed moves, and error codes live here so that the
database layer, the core and every wire format agree on one definition.
"""
