"""Signing key rotation with overlap: the key set, its states and its schedule (issue 11).

States of a signing key: ``next`` (published in the JWKS, trusted, not signing yet),
``current`` (signing, published), ``retiring`` (published and trusted, not signing, until
every token it signed has expired), ``retired`` (neither published nor trusted).

Where keys come from (the trust decision). The template declares two key *slots*
(``SigningKey`` = slot A, ``SigningKeyB``), both with the same key policy: only the token
function's role may ``kms:Sign`` (an explicit Deny for every other principal, so no IAM
policy, AdministratorAccess included, can add a signer). The functions learn the slots'
ARNs from the template (``SIGNING_KEY_SLOTS``), never from the key set. The key set (an
SSM parameter the admin CLI writes) only says *which* slot is in which state; every reader
ignores a key set entry that is not one of the template's slots. So whoever can write the
key set can at worst choose between keys only the token function can sign with: it cannot
add a key that only they can sign with (that needs a template change, i.e. a stack
update, which is the deployment's own trust boundary). We chose slots over
``keys rotate`` creating KMS keys because checking a key policy at every reader is hard to
get exactly right (conditions, grants, later ``PutKeyPolicy``), and it would give the admin
``kms:CreateKey`` and ``kms:PutKeyPolicy``. The price: a rotation flips between the two
slots, so key material is re-used after a full A->B->A cycle unless the retired slot is
replaced by a template update (a new logical id).

The schedule is written once, at ``start``: ``promote_at`` (the new key starts signing)
and ``retire_at`` (the old key stops being trusted). Every reader evaluates the states
with its own clock, so no step can be forgotten and each is idempotent; ``settle``
folds a finished rotation into a plain key set (what ``keys rotate``/``status`` persist).

Why these times: readers cache the key set for at most :data:`KEYSET_MAX_AGE` seconds
and the JWKS is served with ``max-age=300``, so the default propagation interval (600 s)
lets every cache see the ``next`` key before anything signs with it. The old key stays
trusted for the longest token lifetime (15 min) + clock skew + one cache age after
``promote_at``: a token function whose cached key set is one max age old still signs
with the old key for that long, and none of those tokens may outlive the retirement.

Why one module of ~420 lines: the states, the stored document and the readers' view
(what "published" means at the edge, the discovery and the signer) change together; split,
a reader could drift from the schedule it evaluates.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from tokenbroker.domain.clock import Clock
from tokenbroker.domain.errors import (
    AdminError,
    BrokerError,
    ConfigurationError,
    InvalidToken,
    TemporarilyUnavailable,
)
from tokenbroker.domain.models import PublicJwk
from tokenbroker.domain.rfc9068 import MAX_LIFETIME

#: how long a reader may use a key set it read (seconds)
KEYSET_MAX_AGE = 60
#: default time between publishing the next key and signing with it (seconds)
DEFAULT_PROPAGATION = 600
#: the JWKS response's Cache-Control max-age (web/endpoints.py)
JWKS_MAX_AGE = 300
#: a key set document larger than this is refused before parsing
MAX_DOCUMENT = 4096
FORMAT_VERSION = 1


class KeyState(StrEnum):
    NEXT = "next"
    CURRENT = "current"
    RETIRING = "retiring"
    RETIRED = "retired"


PUBLISHED = frozenset({KeyState.NEXT, KeyState.CURRENT, KeyState.RETIRING})


class SigningKeyRetired(InvalidToken):
    """The token's ``kid`` is a retired signing key of this deployment (RFC 6750 §3.1
    ``invalid_token``): it is no longer published, so it is not trusted."""

    reason = "signing_key_retired"


class RotationInProgress(AdminError):
    """A rotation is under way; a second one cannot start before the first completes."""

    error = "rotation_in_progress"


@dataclass(frozen=True)
class Rotation:
    """The incoming key and the schedule written when the rotation started."""

    key_id: str
    started_at: int
    promote_at: int
    retire_at: int


@dataclass(frozen=True)
class KeyStatus:
    key_id: str
    state: KeyState
    #: when the key entered this state (None: before any recorded rotation)
    since: int | None
    #: when it leaves it (None: not scheduled)
    until: int | None


@dataclass(frozen=True)
class KeySet:
    """``active``: the key that signs when no rotation is in flight (during one, the
    outgoing key); ``rotation``: the incoming key and its schedule, if any."""

    active: str
    rotation: Rotation | None = None
    #: when ``active`` became current (None: since the deployment)
    active_since: int | None = None

    # ---- states ------------------------------------------------------------------
    def state_of(self, key_id: str, now: float) -> KeyState:
        r = self.rotation
        if key_id == self.active:
            if r is None or now < r.promote_at:
                return KeyState.CURRENT
            return KeyState.RETIRING if now < r.retire_at else KeyState.RETIRED
        if r is not None and key_id == r.key_id:
            return KeyState.NEXT if now < r.promote_at else KeyState.CURRENT
        return KeyState.RETIRED

    def signing_key(self, now: float) -> str:
        r = self.rotation
        return r.key_id if r is not None and now >= r.promote_at else self.active

    def published(self, now: float) -> tuple[str, ...]:
        keys = (self.active, self.rotation.key_id) if self.rotation else (self.active,)
        return tuple(k for k in keys if self.state_of(k, now) in PUBLISHED)

    def may_sign(self, key_id: str, now: float, *, grace: float) -> bool:
        """True if ``key_id`` is current, or was until less than ``grace`` seconds ago
        (a token whose kid was chosen just before the promotion is still signed; its
        expiry is inside ``retire_at``, which has the skew and a cache age of margin)."""
        r = self.rotation
        if self.state_of(key_id, now) is KeyState.CURRENT:
            return True
        return r is not None and key_id == self.active and now < r.promote_at + grace

    def statuses(self, slots: Sequence[str], now: float) -> list[KeyStatus]:
        out = []
        r = self.rotation
        for key_id in dict.fromkeys((*slots, self.active, *([r.key_id] if r else []))):
            state = self.state_of(key_id, now)
            since: int | None = None
            until: int | None = None
            if r is not None and key_id == r.key_id:
                since, until = (
                    (r.started_at, r.promote_at) if state is KeyState.NEXT else (r.promote_at, None)
                )
            elif key_id == self.active:
                if state is KeyState.CURRENT:
                    since, until = self.active_since, r.promote_at if r else None
                elif r is not None:
                    since = r.promote_at if state is KeyState.RETIRING else r.retire_at
                    until = r.retire_at if state is KeyState.RETIRING else None
            out.append(KeyStatus(key_id, state, since, until))
        return out

    def next_step(self, now: float) -> tuple[int, str] | None:
        """(when, what) of the next scheduled transition, or None."""
        r = self.rotation
        if r is None:
            return None
        if now < r.promote_at:
            return r.promote_at, "next key becomes current; the current key starts retiring"
        if now < r.retire_at:
            return r.retire_at, "retiring key is retired (no longer published or trusted)"
        return None

    # ---- transitions -------------------------------------------------------------
    def settle(self, now: float) -> KeySet:
        """The same states with a finished rotation folded in (idempotent)."""
        r = self.rotation
        if r is not None and now >= r.retire_at:
            return KeySet(active=r.key_id, rotation=None, active_since=r.promote_at)
        return self

    def start_rotation(
        self,
        slots: Sequence[str],
        now: float,
        *,
        propagation: int = DEFAULT_PROPAGATION,
        skew: int = 5,
    ) -> KeySet:
        """Publish the other slot's key as ``next``; it signs after ``propagation``
        seconds; the outgoing key is retired once every token it signed has expired."""
        if propagation < 0:
            raise ConfigurationError("the propagation interval must not be negative")
        current = self.settle(now)
        if current.rotation is not None:
            step = current.next_step(now)
            when = f" (next step at {_iso(step[0])}: {step[1]})" if step else ""
            raise RotationInProgress("a key rotation is already in progress" + when)
        if current.active not in slots:
            raise ConfigurationError("the current signing key is not one of the template's slots")
        incoming = next((s for s in slots if s != current.active), None)
        if incoming is None:
            raise ConfigurationError("rotation needs a second signing key slot")
        start = int(now)
        promote = start + propagation
        retire = promote + MAX_LIFETIME + skew + KEYSET_MAX_AGE
        return KeySet(
            active=current.active,
            rotation=Rotation(incoming, start, promote, retire),
            active_since=current.active_since,
        )

    # ---- the stored document -----------------------------------------------------
    def to_json(self) -> str:
        doc: dict[str, Any] = {"version": FORMAT_VERSION, "active": self.active}
        if self.active_since is not None:
            doc["active_since"] = self.active_since
        if self.rotation is not None:
            r = self.rotation
            doc["rotation"] = {
                "key_id": r.key_id,
                "started_at": r.started_at,
                "promote_at": r.promote_at,
                "retire_at": r.retire_at,
            }
        return json.dumps(doc, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> KeySet:
        """Parse a stored key set; anything malformed is a ConfigurationError (the
        readers fail closed on it)."""
        if len(text) > MAX_DOCUMENT:
            raise ConfigurationError("the key set document is too large")
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise ConfigurationError("the key set document is not JSON") from exc
        if not isinstance(doc, dict) or doc.get("version") != FORMAT_VERSION:
            raise ConfigurationError("the key set document has an unknown format")
        active = _text(doc, "active")
        since = _opt_int(doc, "active_since")
        raw = doc.get("rotation")
        rotation = None
        if raw is not None:
            if not isinstance(raw, dict):
                raise ConfigurationError("the key set rotation must be an object")
            rotation = Rotation(
                _text(raw, "key_id"),
                _int(raw, "started_at"),
                _int(raw, "promote_at"),
                _int(raw, "retire_at"),
            )
            if not rotation.started_at <= rotation.promote_at <= rotation.retire_at:
                raise ConfigurationError("the key set schedule is out of order")
            if rotation.key_id == active:
                raise ConfigurationError("the key set rotates a key to itself")
        return cls(active=active, rotation=rotation, active_since=since)


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _text(doc: dict[str, Any], name: str) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not value or len(value) > 2048:
        raise ConfigurationError(f"the key set field {name!r} must be a non-empty string")
    return value


def _int(doc: dict[str, Any], name: str) -> int:
    value = doc.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigurationError(f"the key set field {name!r} must be a non-negative integer")
    return value


def _opt_int(doc: dict[str, Any], name: str) -> int | None:
    return None if doc.get(name) is None else _int(doc, name)


def restricted(keyset: KeySet, slots: Sequence[str]) -> KeySet:
    """The key set as a reader trusts it: entries that are not template slots dropped.
    An untrusted incoming key is ignored; an untrusted active key is a configuration
    error (fail closed rather than sign or verify with a key nobody vouched for)."""
    if keyset.active not in slots:
        raise ConfigurationError("the key set names a signing key that is not a template slot")
    if keyset.rotation is not None and keyset.rotation.key_id not in slots:
        return KeySet(active=keyset.active, active_since=keyset.active_since)
    return keyset


class KeySetView:
    """The key set and the slots' public keys as one execution environment sees them.

    The key set is re-read at most every ``max_age`` seconds (states move with the
    clock in between); a failed read keeps the last one (retry after
    ``failure_cooldown``), and with none read yet fails closed. Public keys are fetched
    once per slot (a key id's public key never changes). A token whose ``kid`` is a slot
    the cached key set calls retired re-reads the key set first, at most once per
    ``recheck`` seconds: a cache older than a rotation start must not refuse the new
    key; floods of such tokens cost one read per ``recheck``.
    """

    def __init__(
        self,
        load: Callable[[], KeySet | None],
        public_key: Callable[[str], tuple[PublicJwk, Any]],
        slots: Sequence[str],
        *,
        clock: Clock,
        max_age: float = KEYSET_MAX_AGE,
        failure_cooldown: float = 2.0,
        recheck: float = 5.0,
    ) -> None:
        if not slots:
            raise ConfigurationError("SIGNING_KEY_SLOTS is not configured")
        self._load = load
        self._public_key = public_key
        self.slots = tuple(slots)
        self._clock = clock
        self._max_age = max_age
        self._failure_cooldown = failure_cooldown
        self._recheck = recheck
        self._keyset: KeySet | None = None
        self._read_at = float("-inf")
        self._retry_at = float("-inf")
        self._rechecked_at = float("-inf")
        self._keys: dict[str, tuple[PublicJwk, Any]] = {}
        #: kid -> public key of the published set, and until when that set holds
        self._trusted: tuple[dict[str, Any], float] = ({}, float("-inf"))
        self._lock = threading.Lock()

    def keyset(self) -> KeySet:
        now = self._clock()
        with self._lock:
            if now - self._read_at >= self._max_age and now >= self._retry_at:
                self._read(now)
            if self._keyset is None:
                raise TemporarilyUnavailable("the signing key set is unavailable")
            return self._keyset

    def _read(self, now: float) -> None:
        try:
            stored = self._load()
            keyset = restricted(stored or KeySet(active=self.slots[0]), self.slots)
        except BrokerError:
            self._retry_at = now + self._failure_cooldown
            if self._keyset is None:
                raise
            return
        self._keyset, self._read_at = keyset, now

    def key(self, key_id: str) -> tuple[PublicJwk, Any]:
        with self._lock:
            found = self._keys.get(key_id)
        if found is None:
            found = self._public_key(key_id)
            with self._lock:
                self._keys[key_id] = found
        return found

    def jwks(self) -> list[PublicJwk]:
        """The published keys' JWKs, current first."""
        now = self._clock()
        ks = self.keyset()
        ordered = sorted(ks.published(now), key=lambda k: ks.state_of(k, now) != "current")
        return [self.key(k)[0] for k in ordered]

    def resolve(self, kid: str) -> Any | None:
        """The public key of a published key with this ``kid``; SigningKeyRetired for a
        slot that is not published; None for any other kid."""
        now = self._clock()
        trusted, until = self._trusted
        if now < until:  # the hot path: one dict lookup, no lock
            key = trusted.get(kid)
            if key is not None:
                return key
        key = self._published_key(kid, now)
        if key is not None:
            return key
        if not self._is_slot(kid):
            return None  # a stranger: no read, however many arrive
        if self._may_recheck(now):
            key = self._published_key(kid, now)
            if key is not None:
                return key
        raise SigningKeyRetired("the token was signed by a retired key")

    def _published_key(self, kid: str, now: float) -> Any | None:
        keyset = self.keyset()
        trusted = {}
        for slot in keyset.published(now):
            jwk, key = self.key(slot)  # a published key that cannot be fetched: fail closed
            trusted[jwk.kid] = key
        # valid until the next transition or the next re-read, whichever comes first
        step = keyset.next_step(now)
        until = min(self._read_at + self._max_age, step[0] if step else float("inf"))
        self._trusted = (trusted, until)
        return trusted.get(kid)

    def _is_slot(self, kid: str) -> bool:
        for slot in self.slots:
            try:
                if self.key(slot)[0].kid == kid:
                    return True
            except BrokerError:  # an unpublished slot's key only refines the reason
                continue
        return False

    def _may_recheck(self, now: float) -> bool:
        with self._lock:
            if now - self._rechecked_at < self._recheck or now < self._retry_at:
                return False
            self._rechecked_at = now
            self._read_at = float("-inf")  # the next keyset() re-reads
            self._trusted = ({}, float("-inf"))
            return True
