"""The digest files in S3 (DigestBucket, versioned): the only code that knows their layout.

    digests/<YYYY>/<MM>/<DD>/<period start, ISO 8601 UTC>.json            signed statement
    digests/<YYYY>/<MM>/<DD>/<period start, ISO 8601 UTC>.manifest.jsonl  record manifest

e.g. ``digests/2026/11/27/2026-11-27T04:15:00Z.json``. Keys sort chronologically, so the
newest statement of a day is the last ``.json`` key under its prefix. The statement is
written last and only if absent (``If-None-Match: *``): it is the chain head.
"""

from __future__ import annotations

import calendar
import time
from typing import Any

from botocore.exceptions import ClientError

from tokenbroker.adapters.aws import error_code, failing_closed
from tokenbroker.domain.units import DAY_MS

PREFIX = "digests/"
_STATEMENT = ".json"
_MANIFEST = ".manifest.jsonl"
_ISO = "%Y-%m-%dT%H:%M:%SZ"
_MISSING = frozenset({"NoSuchKey", "404", "NotFound"})
_EXISTS = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict"})


def _stem(period_start_ms: int) -> str:
    when = time.gmtime(period_start_ms // 1000)
    return PREFIX + time.strftime("%Y/%m/%d/", when) + time.strftime(_ISO, when)


def _day_prefix(at_ms: int) -> str:
    return PREFIX + time.strftime("%Y/%m/%d/", time.gmtime(at_ms // 1000))


def statement_key(period_start_ms: int) -> str:
    return _stem(period_start_ms) + _STATEMENT


def manifest_key(period_start_ms: int) -> str:
    return _stem(period_start_ms) + _MANIFEST


def _period_of(key: str) -> int | None:
    """The period start of a statement key, None for any other key."""
    if not key.startswith(PREFIX) or not key.endswith(_STATEMENT):
        return None
    name = key.rsplit("/", 1)[-1][: -len(_STATEMENT)]
    try:
        return calendar.timegm(time.strptime(name, _ISO)) * 1000
    except ValueError:
        return None


class S3DigestStore:
    def __init__(self, s3: Any, *, bucket: str) -> None:
        self._s3 = s3
        self.bucket = bucket

    def location(self, period_start_ms: int) -> str:
        return f"s3://{self.bucket}/{statement_key(period_start_ms)}"

    def _get(self, key: str) -> bytes | None:
        with failing_closed("s3:GetObject"):
            try:
                response = self._s3.get_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if error_code(exc) in _MISSING:
                    return None
                raise
            body: bytes = response["Body"].read()
        return body

    def get_statement(self, period_start_ms: int) -> bytes | None:
        return self._get(statement_key(period_start_ms))

    def get_manifest(self, period_start_ms: int) -> bytes | None:
        return self._get(manifest_key(period_start_ms))

    def has_statement(self, period_start_ms: int) -> bool:
        with failing_closed("s3:HeadObject"):
            try:
                self._s3.head_object(Bucket=self.bucket, Key=statement_key(period_start_ms))
            except ClientError as exc:
                if error_code(exc) in _MISSING:
                    return False
                raise
        return True

    def put_manifest(self, period_start_ms: int, body: bytes) -> None:
        """Written before the statement; a crashed seal leaves a manifest that the next
        seal overwrites (the bucket is versioned, nothing is lost)."""
        with failing_closed("s3:PutObject"):
            self._s3.put_object(
                Bucket=self.bucket,
                Key=manifest_key(period_start_ms),
                Body=body,
                ContentType="application/x-ndjson",
            )

    def put_statement(self, period_start_ms: int, body: bytes) -> bool:
        """Write the signed statement unless one exists; False if one already did."""
        with failing_closed("s3:PutObject"):
            try:
                self._s3.put_object(
                    Bucket=self.bucket,
                    Key=statement_key(period_start_ms),
                    Body=body,
                    ContentType="application/json",
                    IfNoneMatch="*",
                )
            except ClientError as exc:
                if error_code(exc) in _EXISTS:
                    return False
                raise
        return True

    def latest_statement(self, *, before_ms: int, not_before_ms: int) -> int | None:
        """The start of the newest sealed period that starts in [not_before_ms, before_ms),
        searching day prefixes backwards from ``before_ms`` (one listing per day)."""
        day = before_ms - before_ms % DAY_MS
        while day + DAY_MS > not_before_ms:
            found = [
                start
                for key in self._keys(_day_prefix(day))
                if (start := _period_of(key)) is not None and not_before_ms <= start < before_ms
            ]
            if found:
                return max(found)
            day -= DAY_MS
        return None

    def _keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        while True:
            with failing_closed("s3:ListObjectsV2"):
                page = self._s3.list_objects_v2(**kwargs)
            keys.extend(str(o["Key"]) for o in page.get("Contents", []))
            if not page.get("IsTruncated"):
                return keys
            kwargs["ContinuationToken"] = page["NextContinuationToken"]
