"""The pinned environments and how their processes run: venvs built with uv, the sandbox, the one process door, warm
workers, locks.
"""
