"""Fixtures of the archive tests (tests/support/archive_stack.py)."""

from support.archive_stack import stack

__all__ = ["stack"]
