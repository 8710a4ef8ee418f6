"""DynamoDB adapters for the ClientDirectory and TokenLedger ports. (Longer than ~400
lines because each transaction with its conditions sits next to the item mapping it
writes: the one place that knows these tables' attribute names.)

Only this module knows item attribute names. Attribute names are the template's key
schema (template.yaml declares the tables; tests provision them from it).

Every change these adapters make (an issuance, an admin action) is written in ONE
``TransactWriteItems`` together with its ledger record in the usage table
(:func:`tokenbroker.adapters.ledger_items.to_item`): both or neither.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from botocore.exceptions import ClientError

from tokenbroker.adapters.attribute_values import deserialize, serialize
from tokenbroker.adapters.aws import error_code, failing_closed, new_item
from tokenbroker.adapters.ledger_items import HOT_WINDOW_DAYS
from tokenbroker.adapters.ledger_items import ID as RECORD_ID
from tokenbroker.adapters.ledger_items import to_item as usage_item
from tokenbroker.domain.errors import (
    Conflict,
    DeviceLimitReached,
    NotFound,
    ProofReplayed,
)
from tokenbroker.domain.models import Client, Device, IssuedToken, Status, UsageRecord

# clients table
CLIENT_ID = "client_id"
NAME = "name"
SECRET_HASH = "secret_hash"
SCOPES = "scopes"
#: RFC 8707: a list (an empty one is allowed, unlike a set)
RESOURCES = "resources"
MAX_DEVICES = "max_devices"
ACTIVE_DEVICES = "active_devices"
STATUS = "status"
CREATED_AT = "created_at"
UPDATED_AT = "updated_at"
#: tokens issued (iat) before this epoch second are refused at the edge (revoke-tokens)
TOKENS_NOT_BEFORE = "tokens_not_before"
#: RFC 7523 private_key_jwt public key (adapters/client_keys.py writes it)
PUBLIC_JWK = "public_jwk"
# devices table (key: jkt; GSI by_client: client_id + enrolled_at)
JKT = "jkt"
LABEL = "label"
ENROLLED_AT = "enrolled_at"
REVOKED_AT = "revoked_at"
PRINCIPAL = "principal"  # devices a person enrolled themselves; tokens issued to a person
DEVICES_BY_CLIENT = "by_client"
#: RFC 7009 (adapters/revocations.py): map jti -> exp of the device's revoked live tokens,
#: its write counter, and the device's own tokens-not-before (when the map overflows)
REVOKED_JTIS = "revoked_jtis"
REVOCATIONS_VERSION = "revocations_version"
DEVICE_TOKENS_NOT_BEFORE = "tokens_not_before"
#: containment step_up (services/containment.py): set by the stream, cleared by exchange
STEP_UP_AT = "step_up_at"
# tokens table (key: jti)
JTI = "jti"
SCOPE = "scope"
AUDIENCE = "aud"
ISSUED_AT = "issued_at"
EXPIRES_AT = "expires_at"
TTL = "ttl"


def _item(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: serialize(v) for k, v in values.items() if v is not None}


def _plain(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: deserialize(v) for k, v in item.items()}


def _client(item: Mapping[str, Any]) -> Client:
    v = _plain(item)
    return Client(
        client_id=v[CLIENT_ID],
        name=v.get(NAME, ""),
        secret_hash=v[SECRET_HASH],
        scopes=frozenset(v.get(SCOPES, ())),
        max_devices=int(v[MAX_DEVICES]),
        status=Status(v[STATUS]),
        created_at=int(v[CREATED_AT]),
        active_devices=int(v.get(ACTIVE_DEVICES, 0)),
        tokens_not_before=int(v.get(TOKENS_NOT_BEFORE, 0)),
        public_jwk=str(v.get(PUBLIC_JWK, "")),
        resources=frozenset(v.get(RESOURCES, ())),
    )


def _device(item: Mapping[str, Any]) -> Device:
    v = _plain(item)
    revoked = v.get(REVOKED_AT)
    return Device(
        jkt=v[JKT],
        client_id=v[CLIENT_ID],
        label=v.get(LABEL, ""),
        status=Status(v[STATUS]),
        enrolled_at=int(v[ENROLLED_AT]),
        revoked_at=int(revoked) if revoked is not None else None,
        principal=v.get(PRINCIPAL, ""),
        step_up_at=int(v.get(STEP_UP_AT, 0)),
    )


def _cancellation_codes(exc: ClientError) -> list[str]:
    reasons = exc.response.get("CancellationReasons") or []
    return [str(r.get("Code", "")) for r in reasons]


def _failed(codes: list[str], index: int, *, of: int) -> bool:
    """Whether transaction item ``index`` (of ``of`` items) failed its condition."""
    return len(codes) == of and codes[index] == "ConditionalCheckFailed"


def _is_cancellation(exc: ClientError) -> bool:
    return error_code(exc) == "TransactionCanceledException"


def ledger_put(
    usage_table: str, record: UsageRecord, hot_window_days: int = HOT_WINDOW_DAYS
) -> dict[str, Any]:
    """The transaction item that writes ``record`` to the ledger (never overwrites);
    the item expires from the table at the end of the hot window (the archive keeps it)."""
    item = usage_item(record, hot_window_days=hot_window_days)
    return {"Put": new_item(usage_table, item, RECORD_ID)}


class DynamoClientDirectory:
    def __init__(
        self,
        dynamodb: Any,
        *,
        clients_table: str,
        devices_table: str,
        usage_table: str,
        hot_window_days: int = HOT_WINDOW_DAYS,
        people_table: str = "",
    ) -> None:
        """``people_table``: where a self-enrolled device's slot is counted (its
        person's item); admin-enrolled devices count against their client."""
        self._ddb = dynamodb
        self._people = people_table
        self._clients = clients_table
        self._devices = devices_table
        self._usage = usage_table
        self._hot_window_days = hot_window_days

    # ---- hot path (token endpoint) -------------------------------------------------
    def get_client_and_device(
        self, client_id: str, jkt: str
    ) -> tuple[Client | None, Device | None]:
        # One round trip, serializable: a device revoked a moment ago is seen as revoked.
        with failing_closed("dynamodb:TransactGetItems"):
            response = self._ddb.transact_get_items(
                TransactItems=[
                    {"Get": {"TableName": self._clients, "Key": _item({CLIENT_ID: client_id})}},
                    {"Get": {"TableName": self._devices, "Key": _item({JKT: jkt})}},
                ]
            )
        client_item, device_item = (r.get("Item") for r in response["Responses"])
        return (
            _client(client_item) if client_item else None,
            _device(device_item) if device_item else None,
        )

    # ---- admin -----------------------------------------------------------------------
    def get_client(self, client_id: str) -> Client | None:
        with failing_closed("dynamodb:GetItem"):
            response = self._ddb.get_item(
                TableName=self._clients, Key=_item({CLIENT_ID: client_id}), ConsistentRead=True
            )
        item = response.get("Item")
        return _client(item) if item else None

    def create_client(self, client: Client, record: UsageRecord) -> None:
        item = _item(
            {
                CLIENT_ID: client.client_id,
                NAME: client.name,
                SECRET_HASH: client.secret_hash,
                SCOPES: set(client.scopes),
                RESOURCES: sorted(client.resources) if client.resources else None,
                MAX_DEVICES: client.max_devices,
                ACTIVE_DEVICES: 0,
                STATUS: client.status.value,
                CREATED_AT: client.created_at,
                UPDATED_AT: client.created_at,
            }
        )
        transact = [
            {"Put": new_item(self._clients, item, CLIENT_ID)},
            ledger_put(self._usage, record, self._hot_window_days),
        ]
        with failing_closed("dynamodb:TransactWriteItems"):
            try:
                self._ddb.transact_write_items(TransactItems=transact)
            except ClientError as exc:
                if _is_cancellation(exc) and _failed(_cancellation_codes(exc), 0, of=2):
                    raise Conflict(f"client {client.client_id} already exists") from exc
                raise

    def list_clients(self) -> Iterator[Client]:
        with failing_closed("dynamodb:Scan"):
            for page in self._ddb.get_paginator("scan").paginate(TableName=self._clients):
                for item in page.get("Items", []):
                    yield _client(item)

    def set_client_status(
        self, client_id: str, status: str, at: int, record: UsageRecord
    ) -> Client:
        transact = [
            {
                "Update": {
                    "TableName": self._clients,
                    "Key": _item({CLIENT_ID: client_id}),
                    "UpdateExpression": "SET #s = :s, #u = :u",
                    "ConditionExpression": "attribute_exists(#id)",
                    "ExpressionAttributeNames": {"#s": STATUS, "#u": UPDATED_AT, "#id": CLIENT_ID},
                    "ExpressionAttributeValues": _item({":s": status, ":u": at}),
                }
            },
            ledger_put(self._usage, record, self._hot_window_days),
        ]
        with failing_closed("dynamodb:TransactWriteItems"):
            try:
                self._ddb.transact_write_items(TransactItems=transact)
            except ClientError as exc:
                if _is_cancellation(exc) and _failed(_cancellation_codes(exc), 0, of=2):
                    raise NotFound(f"client {client_id} does not exist") from exc
                raise
        # a transaction returns no attributes: read the client back (consistently)
        client = self.get_client(client_id)
        if client is None:  # pragma: no cover - clients are never deleted
            raise NotFound(f"client {client_id} does not exist")
        return client

    def set_client_scopes(
        self, client_id: str, scopes: frozenset[str], at: int, record: UsageRecord
    ) -> Client:
        return self._update_client(client_id, {SCOPES: set(scopes)}, at, record)

    def set_tokens_not_before(
        self, client_id: str, not_before: int, at: int, record: UsageRecord
    ) -> Client:
        return self._update_client(client_id, {TOKENS_NOT_BEFORE: not_before}, at, record)

    def set_client_resources(
        self, client_id: str, resources: frozenset[str], at: int, record: UsageRecord
    ) -> Client:
        """RFC 8707: replace the client's resources (and write the record), one transaction."""
        return self._update_client(client_id, {RESOURCES: sorted(resources)}, at, record)

    def _update_client(
        self, client_id: str, values: Mapping[str, Any], at: int, record: UsageRecord
    ) -> Client:
        """SET ``values`` on an existing client, with its ledger record, in ONE
        transaction (the edge's liveness view reads these attributes)."""
        names = {f"#a{i}": name for i, name in enumerate(values)}
        assignments = {f":a{i}": value for i, value in enumerate(values.values())}
        expression = ", ".join(f"#a{i} = :a{i}" for i in range(len(values)))
        transact = [
            {
                "Update": {
                    "TableName": self._clients,
                    "Key": _item({CLIENT_ID: client_id}),
                    "UpdateExpression": f"SET {expression}, #u = :u",
                    "ConditionExpression": "attribute_exists(#id)",
                    "ExpressionAttributeNames": {**names, "#u": UPDATED_AT, "#id": CLIENT_ID},
                    "ExpressionAttributeValues": _item({**assignments, ":u": at}),
                }
            },
            ledger_put(self._usage, record, self._hot_window_days),
        ]
        with failing_closed("dynamodb:TransactWriteItems"):
            try:
                self._ddb.transact_write_items(TransactItems=transact)
            except ClientError as exc:
                if _is_cancellation(exc) and _failed(_cancellation_codes(exc), 0, of=2):
                    raise NotFound(f"client {client_id} does not exist") from exc
                raise
        client = self.get_client(client_id)
        if client is None:  # pragma: no cover - clients are never deleted
            raise NotFound(f"client {client_id} does not exist")
        return client

    def enroll_device(self, device: Device, record: UsageRecord) -> None:
        # All three writes or none: the client's counter is the atomic device limit. The
        # condition reads: the client exists, is active, and has a free device slot.
        transact = [
            {
                "Update": {
                    "TableName": self._clients,
                    "Key": _item({CLIENT_ID: device.client_id}),
                    "UpdateExpression": "SET #n = if_not_exists(#n, :zero) + :one",
                    "ConditionExpression": (
                        "attribute_exists(#id) AND #s = :active AND "
                        "(attribute_not_exists(#n) OR #n < #max)"
                    ),
                    "ExpressionAttributeNames": {
                        "#n": ACTIVE_DEVICES,
                        "#id": CLIENT_ID,
                        "#s": STATUS,
                        "#max": MAX_DEVICES,
                    },
                    "ExpressionAttributeValues": _item(
                        {":zero": 0, ":one": 1, ":active": Status.ACTIVE.value}
                    ),
                }
            },
            {
                "Put": new_item(
                    self._devices,
                    _item(
                        {
                            JKT: device.jkt,
                            CLIENT_ID: device.client_id,
                            LABEL: device.label,
                            STATUS: device.status.value,
                            ENROLLED_AT: device.enrolled_at,
                        }
                    ),
                    JKT,
                )
            },
            ledger_put(self._usage, record, self._hot_window_days),
        ]
        with failing_closed("dynamodb:TransactWriteItems"):
            try:
                self._ddb.transact_write_items(TransactItems=transact)
            except ClientError as exc:
                if not _is_cancellation(exc):
                    raise
                self._explain_enroll_failure(device, _cancellation_codes(exc), exc)

    def _explain_enroll_failure(self, device: Device, codes: list[str], exc: ClientError) -> None:
        if _failed(codes, 1, of=3):
            raise Conflict(
                f"key {device.jkt} is already enrolled (a revoked key cannot be re-enrolled;"
                " generate a new device key)"
            ) from exc
        if _failed(codes, 0, of=3):
            client = self.get_client(device.client_id)
            if client is None:
                raise NotFound(f"client {device.client_id} does not exist") from exc
            if not client.active:
                raise Conflict(f"client {device.client_id} is disabled") from exc
            raise DeviceLimitReached(
                f"client {device.client_id} already has {client.active_devices} of "
                f"{client.max_devices} active devices; revoke one first"
            ) from exc
        raise exc  # throttling/conflict inside the transaction: fail as unavailable

    def revoke_device(self, device: Device, at: int, record: UsageRecord) -> Device:
        jkt = device.jkt
        transact = [
            {
                "Update": {
                    "TableName": self._devices,
                    "Key": _item({JKT: jkt}),
                    "UpdateExpression": "SET #s = :revoked, #at = :at",
                    # still active, and still the client's the caller read
                    "ConditionExpression": "#s = :active AND #c = :client",
                    "ExpressionAttributeNames": {"#s": STATUS, "#at": REVOKED_AT, "#c": CLIENT_ID},
                    "ExpressionAttributeValues": _item(
                        {
                            ":revoked": Status.REVOKED.value,
                            ":active": Status.ACTIVE.value,
                            ":at": at,
                            ":client": device.client_id,
                        }
                    ),
                }
            },
            {
                "Update": {
                    # the slot is freed where it was taken: the person's or the client's
                    "TableName": self._people if device.principal else self._clients,
                    "Key": _item(
                        {PRINCIPAL: device.principal}
                        if device.principal
                        else {CLIENT_ID: device.client_id}
                    ),
                    "UpdateExpression": "SET #n = #n - :one",
                    "ConditionExpression": "#n > :zero",
                    "ExpressionAttributeNames": {"#n": ACTIVE_DEVICES},
                    "ExpressionAttributeValues": _item({":one": 1, ":zero": 0}),
                }
            },
            ledger_put(self._usage, record, self._hot_window_days),
        ]
        with failing_closed("dynamodb:TransactWriteItems"):
            try:
                self._ddb.transact_write_items(TransactItems=transact)
            except ClientError as exc:
                if not _is_cancellation(exc):
                    raise
                codes = _cancellation_codes(exc)
                if _failed(codes, 2, of=3) and "ConditionalCheckFailed" not in codes[:2]:
                    raise  # only the ledger record's id collided: unavailable, retryable
                # as before the ledger record: the device or the client's counter moved
                raise NotFound(f"no active device with key {jkt}") from exc
        return Device(
            jkt=jkt,
            client_id=device.client_id,
            label=device.label,
            status=Status.REVOKED,
            enrolled_at=device.enrolled_at,
            revoked_at=at,
            principal=device.principal,
        )

    def get_device(self, jkt: str) -> Device | None:
        with failing_closed("dynamodb:GetItem"):
            response = self._ddb.get_item(
                TableName=self._devices, Key=_item({JKT: jkt}), ConsistentRead=True
            )
        item = response.get("Item")
        return _device(item) if item else None

    def list_devices(self, client_id: str) -> Iterator[Device]:
        with failing_closed("dynamodb:Query"):
            pages = self._ddb.get_paginator("query").paginate(
                TableName=self._devices,
                IndexName=DEVICES_BY_CLIENT,
                KeyConditionExpression="#c = :c",
                ExpressionAttributeNames={"#c": CLIENT_ID},
                ExpressionAttributeValues=_item({":c": client_id}),
            )
            for page in pages:
                for item in page.get("Items", []):
                    yield _device(item)


def token_item(token: IssuedToken) -> dict[str, Any]:
    """The tokens table item of an issued token (never the token itself)."""
    return _item(
        {
            JTI: token.jti,
            CLIENT_ID: token.client_id,
            JKT: token.jkt,
            SCOPE: " ".join(token.scope),
            AUDIENCE: token.audience,
            ISSUED_AT: token.issued_at,
            EXPIRES_AT: token.expires_at,
            TTL: token.retain_until,
            PRINCIPAL: token.principal or None,
        }
    )


class DynamoTokenLedger:
    def __init__(
        self,
        dynamodb: Any,
        *,
        tokens_table: str,
        usage_table: str,
        hot_window_days: int = HOT_WINDOW_DAYS,
    ) -> None:
        self._ddb = dynamodb
        self._table = tokens_table
        self._usage = usage_table
        self._hot_window_days = hot_window_days

    def record_refusal(self, record: UsageRecord) -> bool:
        # One conditional PutItem: the first refusal of its bucket writes, the rest of
        # the bucket's refusals find the id taken and add nothing.
        with failing_closed("dynamodb:PutItem"):
            try:
                self._ddb.put_item(**ledger_put(self._usage, record, self._hot_window_days)["Put"])
            except ClientError as exc:
                if error_code(exc) == "ConditionalCheckFailedException":
                    return False
                raise
        return True

    def record_issuance(self, token: IssuedToken, record: UsageRecord) -> None:
        item = token_item(token)
        transact = [
            # The jti is derived from the proof's (jkt, jti): if it exists, this proof
            # was already used to obtain a token (RFC 9449 §11.1).
            {"Put": new_item(self._table, item, JTI)},
            ledger_put(self._usage, record, self._hot_window_days),
        ]
        with failing_closed("dynamodb:TransactWriteItems"):
            try:
                self._ddb.transact_write_items(TransactItems=transact)
            except ClientError as exc:
                if _is_cancellation(exc) and _failed(_cancellation_codes(exc), 0, of=2):
                    raise ProofReplayed("DPoP proof has already been used") from exc
                raise
