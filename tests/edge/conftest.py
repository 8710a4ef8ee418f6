"""The moto stack of test_authorizer_faults.py (tables, key and environment from
template.yaml; the real REST handler) for every edge test module that needs it."""

from edge.test_authorizer_faults import app, no_backoff, stack

__all__ = ["app", "no_backoff", "stack"]
