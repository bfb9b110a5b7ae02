"""Judging a cell: counts, shapes, parity and decode from the worker's answer, and the table of named causes and
workarounds.
"""
