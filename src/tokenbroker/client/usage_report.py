"""The SDK's ``report_usage`` for platform teams' protected functions (the implementation
lives in :mod:`tokenbroker.web.usage_report`, which the Lambda layer ships)."""

from tokenbroker.web.usage_report import authorizer_context, report_usage

__all__ = ["authorizer_context", "report_usage"]
