"""The signing key set on AWS: an SSM parameter (the document) and KMS (the keys).

The parameter is written by ``tokenbroker keys rotate`` only; the token, discovery and
authorizer functions read it (ssm:GetParameter, at most once a minute per execution
environment: see :class:`tokenbroker.domain.keyset.KeySetView`). A missing parameter
means "no rotation ever": slot A signs. The parameter names keys, never trusts them:
the readers only accept the template's slots (domain/keyset.py explains why).
"""

from __future__ import annotations

import base64
import json
import threading
from typing import Any

from botocore.exceptions import ClientError
from cryptography.hazmat.primitives.asymmetric import ec

from tokenbroker.adapters.aws import error_code, failing_closed, new_item
from tokenbroker.adapters.kms import KmsSigner, fetch_public_key
from tokenbroker.adapters.ledger_items import HOT_WINDOW_DAYS, ID, to_item
from tokenbroker.domain.clock import Clock
from tokenbroker.domain.errors import ConfigurationError
from tokenbroker.domain.keyset import KEYSET_MAX_AGE, KeySet, KeySetView
from tokenbroker.domain.models import PublicJwk, UsageRecord

_MAX_HEADER = 1024


class SsmKeySetStore:
    def __init__(self, ssm: Any, name: str) -> None:
        if not name:
            raise ConfigurationError("KEY_SET_PARAMETER is not configured")
        self._ssm = ssm
        self.name = name

    def load(self) -> KeySet | None:
        with failing_closed("ssm:GetParameter"):
            try:
                response = self._ssm.get_parameter(Name=self.name)
            except ClientError as exc:  # only "not found" is an answer
                if error_code(exc) == "ParameterNotFound":
                    return None
                raise
        return KeySet.from_json(str(response["Parameter"]["Value"]))

    def save(self, keyset: KeySet) -> None:
        with failing_closed("ssm:PutParameter"):
            self._ssm.put_parameter(
                Name=self.name,
                Value=keyset.to_json(),
                Type="String",
                Overwrite=True,
                Description="tokenbroker signing key set (written by tokenbroker keys rotate)",
            )


def keyset_view(
    kms: Any, ssm: Any, *, parameter: str, slots: tuple[str, ...], clock: Clock
) -> KeySetView:
    store = SsmKeySetStore(ssm, parameter)
    return KeySetView(
        store.load,
        lambda key_id: fetch_public_key(kms, key_id),
        slots,
        clock=clock,
        max_age=KEYSET_MAX_AGE,
    )


class KeySetSigner:
    """The Signer port over the key set: ``public_jwk`` names the current key, and
    ``sign`` signs with the key the signing input's header names (so a promotion between
    the two calls cannot pair one key's kid with another key's signature), if that key
    may still sign."""

    def __init__(self, kms: Any, view: KeySetView, *, clock: Clock, grace: float = 5.0) -> None:
        self._kms = kms
        self._view = view
        self._clock = clock
        self._grace = grace
        self._signers: dict[str, KmsSigner] = {}
        self._lock = threading.Lock()

    def _current(self) -> str:
        return self._view.keyset().signing_key(self._clock())

    def public_jwk(self) -> PublicJwk:
        return self._view.key(self._current())[0]

    def public_key(self) -> ec.EllipticCurvePublicKey:
        key: ec.EllipticCurvePublicKey = self._view.key(self._current())[1]
        return key

    def published_jwks(self) -> list[PublicJwk]:
        return self._view.jwks()

    def sign(self, signing_input: bytes) -> bytes:
        kid = _header_kid(signing_input)
        now = self._clock()
        keyset = self._view.keyset()
        for slot in self._view.slots:
            if self._view.key(slot)[0].kid == kid and keyset.may_sign(slot, now, grace=self._grace):
                return self._signer(slot).sign(signing_input)
        raise ConfigurationError("the signing input names a key that may not sign now")

    def _signer(self, key_id: str) -> KmsSigner:
        with self._lock:
            signer = self._signers.get(key_id)
            if signer is None:
                signer = self._signers[key_id] = KmsSigner(self._kms, key_id)
            return signer


def _header_kid(signing_input: bytes) -> str:
    head = signing_input.split(b".", 1)[0][:_MAX_HEADER]
    try:
        header = json.loads(base64.urlsafe_b64decode(head + b"=" * (-len(head) % 4)))
    except ValueError as exc:
        raise ConfigurationError("the signing input has no readable header") from exc
    kid = header.get("kid") if isinstance(header, dict) else None
    if not isinstance(kid, str):
        raise ConfigurationError("the signing input header has no kid")
    return kid


class DynamoKeyEvents:
    """Signing key events in the ledger (the usage table): one new item per event."""

    def __init__(
        self, dynamodb: Any, usage_table: str, *, hot_window_days: int = HOT_WINDOW_DAYS
    ) -> None:
        self._ddb = dynamodb
        self._table = usage_table
        self._hot_window_days = hot_window_days

    def record(self, record: UsageRecord) -> None:
        with failing_closed("dynamodb:PutItem"):
            self._ddb.put_item(
                **new_item(self._table, to_item(record, hot_window_days=self._hot_window_days), ID)
            )
