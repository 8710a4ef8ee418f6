"""DynamoDB adapter for the UsageLedger port (the usage table declared in template.yaml).

Key design: ``id`` is the record id (for allowed requests the proof's replay key). The
item schema is :mod:`tokenbroker.adapters.ledger_items`; the auditors' indexes and their
sharding are defined in :mod:`tokenbroker.domain.ledger`.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from json.encoder import encode_basestring_ascii as _json_string
from operator import attrgetter
from typing import Any, Final, Protocol

from botocore.exceptions import ClientError

from tokenbroker.adapters.aws import error_code, failing_closed, new_item
from tokenbroker.adapters.ledger_items import (
    ATTRIBUTES,
    FREE_TEXT_FIELDS,
    HOT_WINDOW_DAYS,
    ID,
    NUMBER_FIELDS,
    RETAIN_UNTIL,
    cap_free_text,
    to_item,
)
from tokenbroker.adapters.put_item import LeanPutItem, LeanTransactWriteItems
from tokenbroker.domain.errors import ProofReplayed, TemporarilyUnavailable
from tokenbroker.domain.liveness import Liveness
from tokenbroker.domain.models import Status, UsageRecord
from tokenbroker.domain.units import DAY_SECONDS

#: the item of a ledger record (the schema lives in :mod:`tokenbroker.adapters.ledger_items`)
usage_item = to_item
_encode = json.JSONEncoder(separators=(",", ":")).encode


def usage_item_json(record: UsageRecord, *, hot_window_days: int | None = HOT_WINDOW_DAYS) -> str:
    """``to_item(record, hot_window_days=...)`` spelled directly as the members of a JSON
    object (without the braces), for the edge's one write per request: the same
    attributes from the same schema (``ledger_items.ATTRIBUTES``, the TTL and ``ru`` as
    ``item_values`` sets them, free text capped), typed as ``TypeSerializer`` types
    them: one list comprehension over the text fields (~6 us a record on a quiet
    machine; ``item_values`` then a loop over its dict took ~20 us, TypeSerializer's
    generic dispatch ~40 us). A value of a type no record holds today goes through
    ``to_item`` itself. A test pins that ``json.loads`` of it equals ``to_item(record)``
    for every kind of record."""
    at_ms, retain_until = record.at_ms, record.retain_until
    try:
        if type(at_ms) is not int or type(retain_until) is not int:
            raise TypeError(at_ms, retain_until)
        members = [
            # "" is left out as to_item leaves it out; the StrEnums spell their value
            f"{opening}{_json_string(cap_free_text(value) if free else value)}}}"
            for opening, value, free in zip(_TEXT_OPENINGS, _texts(record), _FREE, strict=True)
            if value != ""
        ]
    except (TypeError, AttributeError):  # not a str: TypeSerializer decides
        return _encode(to_item(record, hot_window_days=hot_window_days))[1:-1]
    members.append(f'{_AT}{at_ms}"}}')
    if hot_window_days is not None and retain_until:
        hot_until = at_ms // 1000 + hot_window_days * DAY_SECONDS
        if hot_until < retain_until:  # as item_values: TTL = the hot window's end
            members.append(f'{_TTL}{hot_until}"}},{_RU}{retain_until}"}}')
            return ",".join(members)
    members.append(f'{_TTL}{retain_until}"}}')
    return ",".join(members)


def _opening(attribute: str, kind: str) -> str:
    """``"name":{"S":`` / ``"name":{"N":"`` (the value and the closing brace follow)."""
    return f'{_json_string(attribute)}:{{"{kind}":' + ('"' if kind == "N" else "")


#: the text fields (every field but the numbers: at_ms and retain_until, spelled above;
#: a new field of either kind fails the tests comparing with to_item), their members'
#: openings, and whether each is free text (capped)
_TEXT_FIELDS: Final = tuple(name for name in ATTRIBUTES if name not in NUMBER_FIELDS)
_texts = attrgetter(*_TEXT_FIELDS)
_TEXT_OPENINGS: Final = tuple(_opening(ATTRIBUTES[name], "S") for name in _TEXT_FIELDS)
_FREE: Final = tuple(name in FREE_TEXT_FIELDS for name in _TEXT_FIELDS)
_AT: Final = _opening(ATTRIBUTES["at_ms"], "N")
_TTL: Final = _opening(ATTRIBUTES["retain_until"], "N")
_RU: Final = _opening(RETAIN_UNTIL, "N")


def put_body_prefix(table: str) -> str:
    """The PutItem body up to the item's first member: ``new_item``'s condition on the
    id and ``ReturnValuesOnConditionCheckFailure``, as JSON, ending in ``"Item":{``."""
    params = {**new_item(table, {}, ID), "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}
    del params["Item"]
    return _encode(params)[:-1] + ',"Item":{'


class DynamoUsageLedger:
    """The edge's one write per request: a conditional PutItem that is both the usage
    record and the replay guard. What the client and device may still do is decided
    before (the service's liveness view, see :mod:`tokenbroker.domain.liveness`)."""

    def __init__(
        self, dynamodb: Any, *, usage_table: str, hot_window_days: int | None = HOT_WINDOW_DAYS
    ) -> None:
        self._ddb = dynamodb
        self._usage = usage_table
        #: the item's TTL is the hot window's end (the archive keeps the retention)
        self._hot_window_days = hot_window_days
        self._put_item = LeanPutItem.for_client(dynamodb)  # the write's transport
        lean = getattr(self._put_item, "__self__", None)
        #: the lean transport's body writer (None: a fake or wrapped client's put_item)
        self._put_body = lean.put_body if isinstance(lean, LeanPutItem) else None
        self._body_prefix = put_body_prefix(usage_table)

    @property
    def usage_table(self) -> str:
        """The table this ledger writes (bootstrap folds quota leases only into it)."""
        return self._usage

    @property
    def hot_window_days(self) -> int | None:
        return self._hot_window_days

    def record_use(self, record: UsageRecord) -> None:
        # New record or nothing: this (jkt, proof jti) was never accepted before
        # (RFC 9449 §11.1). The item lives for the retention period, far past the
        # proof's acceptance window, so the guard outlives every replay chance.
        if not self._insert(record):
            raise ProofReplayed("the DPoP proof has already been used")

    def record_denial(self, record: UsageRecord) -> None:
        # Denial ids are per (token, minute, slot): an id that exists already is the
        # rate limit at work (see services/authorization.py), nothing to add.
        self._insert(record)

    def _item(self, record: UsageRecord) -> dict[str, Any]:
        return usage_item(record, hot_window_days=self._hot_window_days)

    def _insert(self, record: UsageRecord) -> bool:
        """Put the record unless its id exists; False if it did."""
        with failing_closed("dynamodb:PutItem"):
            try:
                # botocore's put_item semantics at a fraction of its CPU (put_item.py)
                if self._put_body is not None:
                    members = usage_item_json(record, hot_window_days=self._hot_window_days)
                    body = f"{self._body_prefix}{members}}}}}"
                    self._put_body(body.encode())
                else:
                    self._put_item(
                        **new_item(self._usage, self._item(record), ID),
                        ReturnValuesOnConditionCheckFailure="ALL_OLD",
                    )
            except ClientError as exc:
                if error_code(exc) == "ConditionalCheckFailedException":
                    # A retry whose first attempt landed (its answer was lost) finds the
                    # very item it sent: this request's own record, not a replay. Another
                    # request's record differs (request id, time) and is a replay. A
                    # record without a request id cannot tell the two apart: a replay.
                    item = self._item(record)
                    return bool(record.request_id) and exc.response.get("Item") == item
                raise
        return True


class LeaseTransactions:
    """The usage record and a quota lease in ONE TransactWriteItems (the folded lease of
    domain/quotas.py::FoldPolicy; the quota store maps its outcome). Item 0 is the
    record's Put with the ledger's own condition (its id is new: the replay guard) and
    ``ReturnValuesOnConditionCheckFailure`` (so a refused Put tells our own earlier
    attempt from a replay, as :class:`DynamoUsageLedger` does); item 1 is the caller's
    ``Update``. The body is spelled as JSON directly (``usage_item_json``, the same item
    as ``to_item``) and sent by :class:`LeanTransactWriteItems`; a client that is not
    botocore's (a fake, a wrapper) gets ``transact_write_items`` with the same items."""

    def __init__(
        self, dynamodb: Any, *, usage_table: str, hot_window_days: int | None = HOT_WINDOW_DAYS
    ) -> None:
        self._ddb = dynamodb
        self._usage = usage_table
        self._hot_window_days = hot_window_days
        self._send = LeanTransactWriteItems.body_sender(dynamodb)
        self._put_prefix = '{"TransactItems":[{"Put":' + put_body_prefix(usage_table)

    def send(self, record: UsageRecord, update: Mapping[str, Any], attempt: int) -> None:
        """Raises ClientError (``TransactionCanceledException`` with its reasons) or
        BotoCoreError, as ``transact_write_items`` does."""
        token = client_request_token(record.record_id, attempt)
        counter = {**update, "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}
        if self._send is not None:
            members = usage_item_json(record, hot_window_days=self._hot_window_days)
            body = (
                f"{self._put_prefix}{members}}}}}}},"
                f'{{"Update":{_encode(counter)}}}],"ClientRequestToken":"{token}"}}'
            )
            self._send(body.encode())
            return
        put = {
            **new_item(self._usage, self.item(record), ID),
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        self._ddb.transact_write_items(
            TransactItems=[{"Put": put}, {"Update": counter}], ClientRequestToken=token
        )

    def item(self, record: UsageRecord) -> dict[str, Any]:
        return usage_item(record, hot_window_days=self._hot_window_days)

    def own_item(self, record: UsageRecord, found: Mapping[str, Any] | None) -> bool:
        """The refused Put found the very item it sends (our own earlier attempt landed,
        its answer was lost): this request's record, not a replay. A record without a
        request id cannot tell the two apart: a replay."""
        return bool(record.request_id) and found == self.item(record)


def client_request_token(record_id: str, attempt: int) -> str:
    """TransactWriteItems' idempotency token (1-36 characters): one per record and
    attempt, so a resend of the same attempt runs once and a re-planned attempt (another
    lease ask) is not refused as a mismatch of the first."""
    digest = hashlib.sha256(f"{record_id}\x00{attempt}".encode()).digest()
    return base64.urlsafe_b64encode(digest[:27]).decode()


class LivenessRider(Protocol):
    """More items read in the liveness BatchGetItem (same round trip, same cache life;
    e.g. adapters/quota_rules.py::RulesRider). ``found`` gets the items of its table that
    exist (in any order: match them by key) after every key was processed; what it
    raises fails the read closed."""

    table: str

    def keys(self, client_id: str, jkt: str) -> list[dict[str, Any]]: ...

    def found(self, client_id: str, jkt: str, items: Sequence[Mapping[str, Any]]) -> None: ...


class DynamoLiveness:
    """Reads a client and a device in one consistent BatchGetItem round trip: the
    client's status, scopes and tokens-not-before, the device's status and client
    (plus one item per rider, on a table of its own)."""

    def __init__(
        self,
        dynamodb: Any,
        *,
        clients_table: str,
        devices_table: str,
        riders: Sequence[LivenessRider] = (),
    ) -> None:
        from tokenbroker.adapters import dynamodb as names  # imports this module

        self._ddb = dynamodb
        self._clients = clients_table
        self._devices = devices_table
        self._status = names.STATUS
        self._client_id = names.CLIENT_ID
        self._scopes = names.SCOPES
        self._not_before = names.TOKENS_NOT_BEFORE
        self._jkt = names.JKT
        self._revoked = names.REVOKED_JTIS
        self._device_not_before = names.DEVICE_TOKENS_NOT_BEFORE
        self._step_up = names.STEP_UP_AT
        if len({clients_table, devices_table, *(r.table for r in riders)}) != 2 + len(riders):
            raise ValueError("each liveness rider reads a table of its own")
        self._riders = tuple(riders)

    def fetch(self, client_id: str, jkt: str) -> Liveness:
        rides = {
            r.table: {"Keys": r.keys(client_id, jkt), "ConsistentRead": True} for r in self._riders
        }
        with failing_closed("dynamodb:BatchGetItem"):
            response = self._ddb.batch_get_item(
                RequestItems={
                    **rides,
                    self._clients: {
                        "Keys": [{self._client_id: {"S": client_id}}],
                        "ConsistentRead": True,
                        "ProjectionExpression": "#s, #sc, #nb",
                        "ExpressionAttributeNames": {
                            "#s": self._status,
                            "#sc": self._scopes,
                            "#nb": self._not_before,
                        },
                    },
                    self._devices: {
                        "Keys": [{self._jkt: {"S": jkt}}],
                        "ConsistentRead": True,
                        "ProjectionExpression": "#s, #c, #r, #nb, #su",
                        "ExpressionAttributeNames": {
                            "#s": self._status,
                            "#c": self._client_id,
                            "#r": self._revoked,
                            "#nb": self._device_not_before,
                            "#su": self._step_up,
                        },
                    },
                }
            )
        if response.get("UnprocessedKeys"):
            raise TemporarilyUnavailable("dynamodb:BatchGetItem left keys unprocessed")
        found = response.get("Responses", {})
        client = (found.get(self._clients) or [{}])[0]
        device = (found.get(self._devices) or [{}])[0]
        active = {"S": Status.ACTIVE.value}
        scopes = client.get(self._scopes, {}).get("SS", [])
        not_before = client.get(self._not_before, {}).get("N", "0")
        try:
            tokens_not_before = int(not_before)
        except ValueError as exc:  # never written by us: refuse rather than guess
            raise TemporarilyUnavailable("the client's tokens_not_before is invalid") from exc
        revoked = device.get(self._revoked, {}).get("M", {})
        try:
            device_not_before = int(device.get(self._device_not_before, {}).get("N", "0"))
        except ValueError as exc:
            raise TemporarilyUnavailable("the device's tokens_not_before is invalid") from exc
        for rider in self._riders:
            rider.found(client_id, jkt, found.get(rider.table) or [])
        return Liveness(
            revoked_jtis=frozenset(revoked) if isinstance(revoked, dict) else frozenset(),
            device_tokens_not_before=device_not_before,
            client_active=client.get(self._status) == active,
            device_active=device.get(self._status) == active
            and device.get(self._client_id) == {"S": client_id},
            client_scopes=frozenset(s for s in scopes if isinstance(s, str)),
            tokens_not_before=tokens_not_before,
            step_up_required=self._step_up in device,
        )
