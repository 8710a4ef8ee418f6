"""moto for a whole test module: provisioning a template's stack is most of a test's
time, so tests/quotas and tests/sharing provision once per module and reset what each
test changes. The environment is the one tests/conftest.py's autouse fixture gives
each test (that fixture runs per test, after a module-scoped one has started)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from moto import mock_aws

ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
UNSET = ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")


@contextmanager
def module_aws() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in ENVIRONMENT.items():
            patch.setenv(name, value)
        for name in UNSET:
            patch.delenv(name, raising=False)
        with mock_aws():
            yield patch


def clear_table(ddb: Any, table: str, keys: tuple[str, ...]) -> None:
    """Delete every item of ``table`` (a test's writes; moto, so one call per item is
    cheap)."""
    for page in ddb.get_paginator("scan").paginate(TableName=table):
        for item in page["Items"]:
            ddb.delete_item(TableName=table, Key={k: item[k] for k in keys})
