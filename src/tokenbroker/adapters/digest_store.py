"""The digest objects in S3 (DigestBucket: versioned, Object Lock in compliance mode): the
only code that knows their layout.

    digests/genesis.json                                         where the chain starts
    digests/<YYYY>/<MM>/<DD>/<period start, ISO 8601>.json            signed statement
    digests/<YYYY>/<MM>/<DD>/<period start, ISO 8601>.manifest.jsonl  the period's index
    digests/<YYYY>/<MM>/<DD>/<period start, ISO 8601>/<segment>.jsonl segment manifests
    digests/<YYYY>/<MM>/<DD>/<period start, ISO 8601>/parts/<n>.json  sealing work state

e.g. ``digests/2026/11/27/2026-11-27T04:15:00Z.json``. Keys sort chronologically. The
statement is written last and only if absent (``If-None-Match: *``). Under Object Lock a
version cannot be deleted or overwritten before its retention ends, but anyone with
``s3:DeleteObject`` can hide it behind a delete marker and ``If-None-Match`` passes over
a delete marker: so the sealer and the verifier look at versions
(``ListObjectVersions``), never at the current object alone. Every write carries a
SHA-256 checksum (S3 requires a checksum for writes to an Object Lock bucket).
"""

from __future__ import annotations

import calendar
import contextlib
import time
from typing import Any

from botocore.exceptions import ClientError

from tokenbroker.adapters.aws import error_code, failing_closed
from tokenbroker.domain.digest_format import Ref, Version
from tokenbroker.domain.units import DAY_MS

PREFIX = "digests/"
GENESIS_KEY = PREFIX + "genesis.json"
_STATEMENT = ".json"
_INDEX = ".manifest.jsonl"
_ISO = "%Y-%m-%dT%H:%M:%SZ"
_MISSING = frozenset({"NoSuchKey", "404", "NotFound", "NoSuchVersion", "MethodNotAllowed"})
_EXISTS = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict"})
#: multipart part size (S3's minimum is 5 MiB): the upload holds at most this in memory
PART_BYTES = 8 * 1024 * 1024
_CHUNK = 1024 * 1024
_CHECKSUM = "SHA256"


def _stem(period_start_ms: int) -> str:
    when = time.gmtime(period_start_ms // 1000)
    return PREFIX + time.strftime("%Y/%m/%d/", when) + time.strftime(_ISO, when)


def _day_prefix(at_ms: int) -> str:
    return PREFIX + time.strftime("%Y/%m/%d/", time.gmtime(at_ms // 1000))


def statement_key(period_start_ms: int) -> str:
    return _stem(period_start_ms) + _STATEMENT


def manifest_key(period_start_ms: int) -> str:
    """The period's index (it lists the segment manifests)."""
    return _stem(period_start_ms) + _INDEX


def segment_key(period_start_ms: int, segment: str) -> str:
    return f"{_stem(period_start_ms)}/{segment}.jsonl"


def parts_prefix(period_start_ms: int) -> str:
    return f"{_stem(period_start_ms)}/parts/"


def key_of(ref: Ref) -> str:
    if ref.kind == "statement":
        return statement_key(ref.period)
    if ref.kind == "index":
        return manifest_key(ref.period)
    if ref.kind == "segment":
        return segment_key(ref.period, ref.segment)
    if ref.kind == "part":
        return f"{parts_prefix(ref.period)}{ref.segment}.json"
    return GENESIS_KEY


def _period_of(key: str) -> int | None:
    """The period start of a statement key, None for any other key."""
    if not key.startswith(PREFIX) or not key.endswith(_STATEMENT) or key == GENESIS_KEY:
        return None
    name = key.rsplit("/", 1)[-1][: -len(_STATEMENT)]
    try:
        return calendar.timegm(time.strptime(name, _ISO)) * 1000
    except ValueError:
        return None


class _MultipartUpload:
    """Buffers at most PART_BYTES; a body smaller than one part is one PutObject."""

    def __init__(self, s3: Any, bucket: str, key: str) -> None:
        self._s3, self._bucket, self._key = s3, bucket, key
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []

    def write(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) >= PART_BYTES:
            self._flush()

    def _flush(self) -> None:
        with failing_closed("s3:UploadPart"):
            if self._upload_id is None:
                self._upload_id = self._s3.create_multipart_upload(
                    Bucket=self._bucket,
                    Key=self._key,
                    ContentType="application/x-ndjson",
                    ChecksumAlgorithm=_CHECKSUM,
                )["UploadId"]
            number = len(self._parts) + 1
            response = self._s3.upload_part(
                Bucket=self._bucket,
                Key=self._key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=bytes(self._buffer),
                ChecksumAlgorithm=_CHECKSUM,
            )
        self._parts.append(
            {
                "PartNumber": number,
                "ETag": response["ETag"],
                "ChecksumSHA256": response.get("ChecksumSHA256"),
            }
        )
        self._buffer.clear()

    def commit(self) -> None:
        if self._upload_id is None:
            with failing_closed("s3:PutObject"):
                self._s3.put_object(
                    Bucket=self._bucket,
                    Key=self._key,
                    Body=bytes(self._buffer),
                    ContentType="application/x-ndjson",
                    ChecksumAlgorithm=_CHECKSUM,
                )
            return
        if self._buffer:
            self._flush()
        parts = [{k: v for k, v in p.items() if v is not None} for p in self._parts]
        with failing_closed("s3:CompleteMultipartUpload"):
            self._s3.complete_multipart_upload(
                Bucket=self._bucket,
                Key=self._key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": parts},
            )

    def abort(self) -> None:
        self._buffer.clear()
        if self._upload_id is not None:
            with contextlib.suppress(ClientError):  # best effort (a lifecycle rule cleans up)
                self._s3.abort_multipart_upload(
                    Bucket=self._bucket, Key=self._key, UploadId=self._upload_id
                )


class S3DigestStore:
    def __init__(self, s3: Any, *, bucket: str) -> None:
        self._s3 = s3
        self.bucket = bucket

    def location(self, period_start_ms: int) -> str:
        return f"s3://{self.bucket}/{statement_key(period_start_ms)}"

    # ---- reading ----------------------------------------------------------------------
    def _object(self, ref: Ref, version_id: str | None) -> Any | None:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key_of(ref)}
        if version_id is not None:
            kwargs["VersionId"] = version_id
        try:
            return self._s3.get_object(**kwargs)
        except ClientError as exc:
            if error_code(exc) in _MISSING:
                return None
            raise

    def get(self, ref: Ref, version_id: str | None = None) -> bytes | None:
        with failing_closed("s3:GetObject"):
            response = self._object(ref, version_id)
            if response is None:
                return None
            body: bytes = response["Body"].read()
        return body

    def chunks(self, ref: Ref, version_id: str | None = None) -> Any:
        with failing_closed("s3:GetObject"):
            response = self._object(ref, version_id)
        if response is None:
            return
        stream = response["Body"]
        while True:
            with failing_closed("s3:GetObject"):
                chunk = stream.read(_CHUNK)
            if not chunk:
                return
            yield chunk

    def versions(self, ref: Ref) -> list[Version]:
        key = key_of(ref)
        found: list[tuple[bool, Version]] = []
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": key}
        while True:
            with failing_closed("s3:ListObjectVersions"):
                page = self._s3.list_object_versions(**kwargs)
            for kind, deleted in (("Versions", False), ("DeleteMarkers", True)):
                for entry in page.get(kind, []):
                    if entry["Key"] == key:
                        modified = entry.get("LastModified")
                        version = Version(
                            str(entry["VersionId"]),
                            deleted,
                            int(modified.timestamp() * 1000) if modified else 0,
                        )
                        found.append((bool(entry.get("IsLatest")), version))
            if not page.get("IsTruncated"):
                break
            kwargs["KeyMarker"] = page["NextKeyMarker"]
            kwargs["VersionIdMarker"] = page["NextVersionIdMarker"]
        # S3 lists a key's versions newest first but delete markers in a separate list,
        # and LastModified has second resolution: the current one (IsLatest) goes first
        ordered = sorted(found, key=lambda f: (f[0], f[1].modified_ms), reverse=True)
        return [version for _, version in ordered]

    def parts(self, period_start_ms: int) -> list[bytes]:
        bodies = []
        for key in self._keys(parts_prefix(period_start_ms), delimiter=False):
            with failing_closed("s3:GetObject"):
                response = self._s3.get_object(Bucket=self.bucket, Key=key)
                bodies.append(bytes(response["Body"].read()))
        return bodies

    def latest_sealed(self, *, before_ms: int, not_before_ms: int) -> int | None:
        """Searches day prefixes backwards from ``before_ms`` (one version listing per
        day, top-level keys only), counting statements hidden by delete markers."""
        day = before_ms - before_ms % DAY_MS
        while day + DAY_MS > not_before_ms:
            found = [
                start
                for key in self._version_keys(_day_prefix(day))
                if (start := _period_of(key)) is not None and not_before_ms <= start < before_ms
            ]
            if found:
                return max(found)
            day -= DAY_MS
        return None

    def _version_keys(self, prefix: str) -> set[str]:
        keys: set[str] = set()
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "Delimiter": "/"}
        while True:
            with failing_closed("s3:ListObjectVersions"):
                page = self._s3.list_object_versions(**kwargs)
            for kind in ("Versions", "DeleteMarkers"):
                keys.update(str(e["Key"]) for e in page.get(kind, []))
            if not page.get("IsTruncated"):
                return keys
            kwargs["KeyMarker"] = page["NextKeyMarker"]
            kwargs["VersionIdMarker"] = page.get("NextVersionIdMarker")

    def _keys(self, prefix: str, *, delimiter: bool) -> list[str]:
        keys: list[str] = []
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if delimiter:
            kwargs["Delimiter"] = "/"
        while True:
            with failing_closed("s3:ListObjectsV2"):
                page = self._s3.list_objects_v2(**kwargs)
            keys.extend(str(o["Key"]) for o in page.get("Contents", []))
            if not page.get("IsTruncated"):
                return keys
            kwargs["ContinuationToken"] = page["NextContinuationToken"]

    # ---- writing ----------------------------------------------------------------------
    def put(self, ref: Ref, body: bytes) -> None:
        with failing_closed("s3:PutObject"):
            self._s3.put_object(
                Bucket=self.bucket, Key=key_of(ref), Body=body, ChecksumAlgorithm=_CHECKSUM
            )

    def put_new(self, ref: Ref, body: bytes) -> bool:
        with failing_closed("s3:PutObject"):
            try:
                self._s3.put_object(
                    Bucket=self.bucket,
                    Key=key_of(ref),
                    Body=body,
                    ContentType="application/json",
                    IfNoneMatch="*",
                    ChecksumAlgorithm=_CHECKSUM,
                )
            except ClientError as exc:
                if error_code(exc) in _EXISTS:
                    return False
                raise
        return True

    def upload(self, ref: Ref) -> _MultipartUpload:
        if ref.kind != "segment":
            raise ValueError("only segment manifests are uploaded in parts")
        return _MultipartUpload(self._s3, self.bucket, key_of(ref))
