"""The digest files' format: pure encoding and decoding, shared by the sealer, the
verifier, the store port and the benchmark (no I/O here).

A sealed period ``[start, end)`` is, from the bottom up:

* one **segment manifest** per non-empty segment of the ledger reader (today one
  ``by_hour`` shard of the period's hour): JSON Lines in ``(at, id)`` order, one
  ``{"at", "id", "sha256"[, "ttl"]}`` per record, ``sha256`` being
  :func:`~tokenbroker.domain.ledger.record_hash` of the whole item. Written streaming
  (S3 multipart upload), so neither the sealer nor the verifier ever holds a segment;
* an **index** (the period's manifest): JSON Lines sorted by segment, one
  ``{"segment", "record_count", "sha256"}`` per non-empty segment (a segment that is not
  listed was empty when sealed);
* a signed **statement** ``{"version", "period_start", "period_end", "record_count",
  "segments", "manifest_sha256" (of the index), "previous_digest_sha256" (of the previous
  period's stored statement file), "chain_start", "sealed_at", "key_id"}``, stored as
  ``{"statement", "signature" (base64 DER), "signing_algorithm"}``;
* once per deployment, a signed **genesis** ``{"version", "kind": "genesis",
  "chain_start", "sealed_at", "key_id"}``: where the chain starts (periods before it are
  ``before_first_digest``, not missing).

Everything signed or hashed is canonical JSON: sorted keys, no whitespace, UTF-8.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from tokenbroker.domain.pairs import unique_mapping

VERSION = 2
Kind = Literal["statement", "index", "segment", "part", "genesis"]


class DigestFormatError(ValueError):
    """A digest, index or manifest file that is not what a seal writes."""


@dataclass(frozen=True)
class Ref:
    """Names one digest object; only the store adapter knows where it lives."""

    kind: Kind
    period: int = 0  # ms
    segment: str = ""  # for kind "segment" (and a part's first segment)


@dataclass(frozen=True)
class Version:
    """One stored version of an object (newest first in a listing)."""

    version_id: str
    deleted: bool  # a delete marker
    modified_ms: int = 0


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the bytes that are signed and hashed."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _strict_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    return unique_mapping(pairs, lambda key: DigestFormatError(f"duplicate key {key!r}"))


def loads(data: bytes) -> Any:
    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=_strict_object)
    except (UnicodeDecodeError, ValueError) as exc:
        raise DigestFormatError(str(exc)) from exc


# ---------------------------------------------------------------- segment manifests
@dataclass(frozen=True, order=True)
class ManifestLine:
    """One record in a segment manifest; ordered by (at, id), the manifest's order."""

    at: int
    id: str
    sha256: str
    ttl: int | None = None

    def encode(self) -> bytes:
        entry: dict[str, Any] = {"at": self.at, "id": self.id, "sha256": self.sha256}
        if self.ttl is not None:
            entry["ttl"] = self.ttl
        return canonical_json(entry) + b"\n"


def decode_line(line: bytes) -> ManifestLine:
    value = loads(line)
    if not isinstance(value, dict) or set(value) - {"at", "id", "sha256", "ttl"}:
        raise DigestFormatError("malformed manifest line")
    at, record_id, digest, ttl = (value.get(k) for k in ("at", "id", "sha256", "ttl"))
    if (
        type(at) is not int
        or not isinstance(record_id, str)
        or not isinstance(digest, str)
        or not (ttl is None or type(ttl) is int)
    ):
        raise DigestFormatError("malformed manifest line")
    return ManifestLine(at, record_id, digest, ttl)


def decode_lines(chunks: Iterable[bytes]) -> Iterator[ManifestLine]:
    """Manifest lines from a stream of byte chunks, in order; raises DigestFormatError if
    they are not strictly increasing by (at, id)."""
    previous: ManifestLine | None = None
    for raw in split_lines(chunks):
        line = decode_line(raw)
        if previous is not None and (line.at, line.id) <= (previous.at, previous.id):
            raise DigestFormatError("manifest lines out of order or repeated")
        previous = line
        yield line


def split_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    pending = b""
    for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        yield from (line for line in complete if line)
    if pending:
        yield pending


# ------------------------------------------------------------------------- index
@dataclass(frozen=True)
class SegmentSeal:
    """What a sealed segment contributes to its period's index."""

    segment: str
    record_count: int
    sha256: str

    def as_json(self) -> dict[str, Any]:
        return {"segment": self.segment, "record_count": self.record_count, "sha256": self.sha256}


def encode_index(seals: Iterable[SegmentSeal]) -> bytes:
    ordered = sorted((s for s in seals if s.record_count), key=lambda s: s.segment)
    return b"".join(canonical_json(s.as_json()) + b"\n" for s in ordered)


def decode_index(body: bytes) -> dict[str, SegmentSeal]:
    seals: dict[str, SegmentSeal] = {}
    for line in body.splitlines():
        value = loads(line)
        if not isinstance(value, dict):
            raise DigestFormatError("malformed index line")
        segment, count = value.get("segment"), value.get("record_count")
        digest = value.get("sha256")
        if not isinstance(segment, str) or type(count) is not int or not isinstance(digest, str):
            raise DigestFormatError("malformed index line")
        if segment in seals:
            raise DigestFormatError(f"segment {segment!r} twice in the index")
        seals[segment] = SegmentSeal(segment, count, digest)
    return seals


def encode_part(period: int, done: Iterable[str], seals: Iterable[SegmentSeal]) -> bytes:
    """Working state of a period sealed over several invocations (not evidence: only
    the index it leads to is hashed into the signed statement)."""
    return canonical_json(
        {
            "period_start": period,
            "done": sorted(done),
            "seals": [s.as_json() for s in seals if s.record_count],
        }
    )


def decode_part(body: bytes) -> tuple[set[str], list[SegmentSeal]]:
    value = loads(body)
    if not isinstance(value, dict) or not isinstance(value.get("done"), list):
        raise DigestFormatError("malformed part")
    index = decode_index(b"\n".join(canonical_json(s) for s in value.get("seals", [])))
    return {str(d) for d in value["done"]}, list(index.values())


# -------------------------------------------------------------------- statements
def encode_digest(statement: Mapping[str, Any], signature: bytes, algorithm: str) -> bytes:
    envelope = {
        "statement": dict(statement),
        "signature": base64.b64encode(signature).decode("ascii"),
        "signing_algorithm": algorithm,
    }
    return json.dumps(envelope, sort_keys=True, indent=2).encode("utf-8") + b"\n"


def decode_digest(body: bytes) -> tuple[dict[str, Any], bytes]:
    """(statement, DER signature) of a stored digest file."""
    envelope = loads(body)
    if not isinstance(envelope, dict) or not isinstance(envelope.get("statement"), dict):
        raise DigestFormatError("no statement")
    try:
        signature = base64.b64decode(str(envelope.get("signature", "")), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DigestFormatError("signature is not base64") from exc
    return envelope["statement"], signature
