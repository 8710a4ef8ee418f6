"""DynamoDB adapter for refresh tokens (RFC 6749 §6, RFC 9449 §5): the refresh tokens
table holds one item per refresh token (key ``id`` = SHA-256 of the opaque token: the
token itself is never stored) and one item per family (key ``fam:<family id>``).

Every change is ONE transaction with the access token it issues and its ledger record:
- a family starts (token exchange): family item, refresh item, token, ledger record;
- a rotation (refresh): old refresh item active -> used, the family still active and its
  ``current`` the old one -> the new one, the new refresh item, token, ledger record. Two
  concurrent refreshes of one token both read it active; DynamoDB lets exactly one of
  the two conditional updates pass, the other transaction is cancelled (nothing written).
- reuse of a used token revokes the family (and writes its ledger record).
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from tokenbroker.adapters.aws import failing_closed, new_item
from tokenbroker.adapters.dynamodb import (
    CLIENT_ID,
    JKT,
    JTI,
    PRINCIPAL,
    STATUS,
    TTL,
    _cancellation_codes,
    _client,
    _device,
    _is_cancellation,
    _item,
    _plain,
    ledger_put,
    token_item,
)
from tokenbroker.adapters.ledger_items import HOT_WINDOW_DAYS
from tokenbroker.adapters.people import _person
from tokenbroker.domain.errors import InvalidGrant
from tokenbroker.domain.models import (
    Client,
    Device,
    IssuedToken,
    PersonAccount,
    RefreshGrant,
    UsageRecord,
)

ID = "id"
FAMILY = "family"
SCOPE = "scope"
AUDIENCE = "aud"
ISSUED_AT = "issued_at"
STARTED_AT = "started_at"  # the family's: the absolute lifetime counts from here
CURRENT = "current"
ACTIVE, USED, REVOKED = "active", "used", "revoked"
_FAMILY_PREFIX = "fam:"


def _grant_item(grant: RefreshGrant) -> dict[str, Any]:
    return _item(
        {
            ID: grant.token_id,
            FAMILY: grant.family,
            CLIENT_ID: grant.client_id,
            JKT: grant.jkt,
            PRINCIPAL: grant.principal,
            SCOPE: " ".join(grant.scope),
            AUDIENCE: grant.audience,
            ISSUED_AT: grant.issued_at,
            STARTED_AT: grant.started_at,
            STATUS: ACTIVE,
            TTL: grant.retain_until,
        }
    )


def _family_item(grant: RefreshGrant) -> dict[str, Any]:
    return _item(
        {
            ID: _FAMILY_PREFIX + grant.family,
            FAMILY: grant.family,
            CLIENT_ID: grant.client_id,
            JKT: grant.jkt,
            PRINCIPAL: grant.principal,
            STARTED_AT: grant.started_at,
            CURRENT: grant.token_id,
            STATUS: ACTIVE,
            TTL: grant.retain_until,
        }
    )


class DynamoRefreshStore:
    def __init__(
        self,
        dynamodb: Any,
        *,
        refresh_table: str,
        tokens_table: str,
        usage_table: str,
        clients_table: str,
        devices_table: str,
        people_table: str,
        hot_window_days: int = HOT_WINDOW_DAYS,
    ) -> None:
        self._ddb = dynamodb
        self._table = refresh_table
        self._tokens = tokens_table
        self._usage = usage_table
        self._hot_window_days = hot_window_days
        self._clients = clients_table
        self._devices = devices_table
        self._people = people_table

    def _issuance(self, token: IssuedToken, record: UsageRecord) -> list[dict[str, Any]]:
        return [
            {"Put": new_item(self._tokens, token_item(token), JTI)},
            ledger_put(self._usage, record, self._hot_window_days),
        ]

    def start_family(self, grant: RefreshGrant, token: IssuedToken, record: UsageRecord) -> None:
        transact = [
            {"Put": new_item(self._table, _family_item(grant), ID)},
            {"Put": new_item(self._table, _grant_item(grant), ID)},
            *self._issuance(token, record),
        ]
        self._write(transact, "this DPoP proof has already been used")

    def lookup(
        self, token_id: str, *, family: str, client_id: str, jkt: str, principal: str
    ) -> tuple[RefreshGrant | None, Client | None, Device | None, PersonAccount | None]:
        """The refresh token and its family, and the client, device and person it must
        be bound to, in ONE consistent round trip. ``family`` and ``principal`` come from
        the presented token and ``jkt`` from the proof: the caller checks them against
        what is stored."""
        gets = [
            (self._table, {ID: token_id}),
            (self._table, {ID: _FAMILY_PREFIX + family}),
            (self._clients, {CLIENT_ID: client_id}),
            (self._devices, {JKT: jkt}),
            (self._people, {PRINCIPAL: principal}),
        ]
        with failing_closed("dynamodb:TransactGetItems"):
            response = self._ddb.transact_get_items(
                TransactItems=[{"Get": {"TableName": t, "Key": _item(k)}} for t, k in gets]
            )
        item, fam, c, d, p = (r.get("Item") for r in response["Responses"])
        client = _client(c) if c else None
        device = _device(d) if d else None
        person = _person(p) if p else None
        if not item:
            return None, client, device, person
        v = _plain(item)
        stored_family = _plain(fam) if fam else {}
        grant = RefreshGrant(
            token_id=token_id,
            family=v[FAMILY],
            client_id=v[CLIENT_ID],
            jkt=v[JKT],
            principal=v.get(PRINCIPAL, ""),
            scope=tuple(str(v.get(SCOPE, "")).split()),
            audience=v.get(AUDIENCE, ""),
            issued_at=int(v[ISSUED_AT]),
            started_at=int(v[STARTED_AT]),
            status=v.get(STATUS, REVOKED),
            family_status=stored_family.get(STATUS, REVOKED),
            family_current=stored_family.get(CURRENT, ""),
        )
        return grant, client, device, person

    def rotate(
        self, old: RefreshGrant, new: RefreshGrant, token: IssuedToken, record: UsageRecord
    ) -> None:
        transact = [
            {
                "Update": {
                    "TableName": self._table,
                    "Key": _item({ID: old.token_id}),
                    "UpdateExpression": "SET #s = :used",
                    "ConditionExpression": "#s = :active",
                    "ExpressionAttributeNames": {"#s": STATUS},
                    "ExpressionAttributeValues": _item({":used": USED, ":active": ACTIVE}),
                }
            },
            {
                "Update": {
                    "TableName": self._table,
                    "Key": _item({ID: _FAMILY_PREFIX + old.family}),
                    "UpdateExpression": "SET #c = :new",
                    # the family is alive and this token is still its newest: a concurrent
                    # rotation of the same token moved it on, so at most one passes
                    "ConditionExpression": "#s = :active AND #c = :old",
                    "ExpressionAttributeNames": {"#s": STATUS, "#c": CURRENT},
                    "ExpressionAttributeValues": _item(
                        {":active": ACTIVE, ":old": old.token_id, ":new": new.token_id}
                    ),
                }
            },
            {"Put": new_item(self._table, _grant_item(new), ID)},
            *self._issuance(token, record),
        ]
        self._write(transact, "the refresh token was used concurrently; use the newest one")

    def revoke_family(self, family: str, record: UsageRecord) -> None:
        transact = [
            {
                "Update": {
                    "TableName": self._table,
                    "Key": _item({ID: _FAMILY_PREFIX + family}),
                    "UpdateExpression": "SET #s = :revoked",
                    "ExpressionAttributeNames": {"#s": STATUS},
                    "ExpressionAttributeValues": _item({":revoked": REVOKED}),
                }
            },
            ledger_put(self._usage, record, self._hot_window_days),
        ]
        with failing_closed("dynamodb:TransactWriteItems"):
            self._ddb.transact_write_items(TransactItems=transact)

    def _write(self, transact: list[dict[str, Any]], conflict: str) -> None:
        with failing_closed("dynamodb:TransactWriteItems"):
            try:
                self._ddb.transact_write_items(TransactItems=transact)
            except ClientError as exc:
                if _is_cancellation(exc) and "ConditionalCheckFailed" in _cancellation_codes(exc):
                    raise InvalidGrant(conflict, reason="refresh_conflict") from exc
                raise
