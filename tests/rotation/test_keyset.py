"""The key set state machine (pure domain, clock passed in) and the readers' view of it."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tokenbroker.domain.clock import FixedClock
from tokenbroker.domain.errors import ConfigurationError, TemporarilyUnavailable
from tokenbroker.domain.keyset import (
    KEYSET_MAX_AGE,
    KeySet,
    KeySetView,
    KeyState,
    Rotation,
    RotationInProgress,
    SigningKeyRetired,
)
from tokenbroker.domain.models import PublicJwk
from tokenbroker.domain.rfc9068 import MAX_LIFETIME

A, B = "arn:key/a", "arn:key/b"
SLOTS = (A, B)
NOW = 1_800_000_000
PROP = 600
SKEW = 5
RETIRE = NOW + PROP + MAX_LIFETIME + SKEW + KEYSET_MAX_AGE


def rotating() -> KeySet:
    return KeySet(active=A).start_rotation(SLOTS, NOW, propagation=PROP, skew=SKEW)


def test_without_a_rotation_slot_a_is_current_and_slot_b_is_neither_published_nor_trusted() -> None:
    ks = KeySet(active=A)
    assert (ks.state_of(A, NOW), ks.state_of(B, NOW)) == (KeyState.CURRENT, KeyState.RETIRED)
    assert ks.published(NOW) == (A,)
    assert ks.signing_key(NOW) == A


def test_a_rotation_publishes_the_next_key_before_it_signs() -> None:
    ks = rotating()
    assert ks.state_of(B, NOW) is KeyState.NEXT
    assert ks.published(NOW) == (A, B)
    assert ks.signing_key(NOW + PROP - 1) == A


def test_after_the_propagation_interval_the_next_key_signs_and_the_old_one_retires() -> None:
    ks = rotating()
    at = NOW + PROP
    assert ks.signing_key(at) == B
    assert (ks.state_of(A, at), ks.state_of(B, at)) == (KeyState.RETIRING, KeyState.CURRENT)
    assert ks.published(at) == (A, B)


def test_the_old_key_stays_published_until_every_token_it_signed_has_expired() -> None:
    ks = rotating()
    last_old_token_exp = NOW + PROP + MAX_LIFETIME  # signed at the last moment, longest life
    assert A in ks.published(last_old_token_exp + SKEW)
    assert ks.state_of(A, RETIRE - 1) is KeyState.RETIRING
    assert ks.state_of(A, RETIRE) is KeyState.RETIRED
    assert ks.published(RETIRE) == (B,)


def test_settling_folds_a_finished_rotation_in_and_is_idempotent() -> None:
    ks = rotating()
    assert ks.settle(RETIRE - 1) == ks
    settled = ks.settle(RETIRE)
    assert settled == KeySet(active=B, active_since=NOW + PROP)
    assert settled.settle(RETIRE + 10_000) == settled
    # the states are the same before and after settling
    for key in SLOTS:
        assert settled.state_of(key, RETIRE) == ks.state_of(key, RETIRE)


def test_a_second_rotation_mid_rotation_is_refused_with_the_next_step() -> None:
    ks = rotating()
    for at in (NOW, NOW + PROP, RETIRE - 1):
        with pytest.raises(RotationInProgress, match=r"already in progress .*next step at"):
            ks.start_rotation(SLOTS, at, propagation=PROP, skew=SKEW)


def test_after_a_finished_rotation_the_next_one_flips_back_to_the_first_slot() -> None:
    again = rotating().start_rotation(SLOTS, RETIRE, propagation=PROP, skew=SKEW)
    assert again.active == B
    assert again.rotation is not None
    assert again.rotation.key_id == A


def test_rotation_needs_a_second_slot_and_a_current_key_that_is_a_slot() -> None:
    with pytest.raises(ConfigurationError, match="second signing key slot"):
        KeySet(active=A).start_rotation((A,), NOW)
    with pytest.raises(ConfigurationError, match="not one of the template's slots"):
        KeySet(active="arn:key/attacker").start_rotation(SLOTS, NOW)


def test_a_token_whose_kid_was_chosen_just_before_the_promotion_may_still_be_signed() -> None:
    ks = rotating()
    assert ks.may_sign(A, NOW + PROP - 1, grace=5)
    assert ks.may_sign(A, NOW + PROP + 4, grace=5)
    assert not ks.may_sign(A, NOW + PROP + 5, grace=5)
    assert not ks.may_sign(B, NOW, grace=5)  # next: published, not signing


def test_the_stored_document_round_trips() -> None:
    for ks in (KeySet(active=A), rotating(), rotating().settle(RETIRE)):
        assert KeySet.from_json(ks.to_json()) == ks


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("not json", "not JSON"),
        ('{"version": 2, "active": "a"}', "unknown format"),
        ('{"version": 1}', "'active'"),
        ('{"version": 1, "active": "a", "rotation": []}', "must be an object"),
        (
            '{"version":1,"active":"a","rotation":{"key_id":"b","started_at":5,'
            '"promote_at":4,"retire_at":9}}',
            "out of order",
        ),
        (
            '{"version":1,"active":"a","rotation":{"key_id":"a","started_at":1,'
            '"promote_at":2,"retire_at":3}}',
            "to itself",
        ),
        (
            '{"version":1,"active":"a","rotation":{"key_id":"b","started_at":true,'
            '"promote_at":2,"retire_at":3}}',
            "non-negative integer",
        ),
        ('{"version": 1, "active": "' + "x" * 5000 + '"}', "too large"),
    ],
)
def test_a_malformed_document_is_a_configuration_error(text: str, why: str) -> None:
    with pytest.raises(ConfigurationError, match=why):
        KeySet.from_json(text)


# ---- the readers' view ----------------------------------------------------------------


class Keys:
    """Two P-256 key pairs standing in for the KMS slots."""

    def __init__(self) -> None:
        self.private = {k: ec.generate_private_key(ec.SECP256R1()) for k in SLOTS}
        self.fetches: list[str] = []
        self.failing: set[str] = set()

    def public(self, key_id: str) -> tuple[PublicJwk, Any]:
        self.fetches.append(key_id)
        if key_id not in self.private:
            raise TemporarilyUnavailable("no such key")
        if key_id in self.failing:
            raise TemporarilyUnavailable("kms:GetPublicKey failed")
        key = self.private[key_id].public_key()
        return PublicJwk(kid="kid-" + key_id[-1], jwk={}), key


class Store:
    def __init__(self, keyset: KeySet | None = None) -> None:
        self.keyset = keyset
        self.reads = 0
        self.failing = False

    def load(self) -> KeySet | None:
        self.reads += 1
        if self.failing:
            raise TemporarilyUnavailable("ssm:GetParameter failed")
        return self.keyset


def view(store: Store, keys: Keys, clock: FixedClock) -> KeySetView:
    return KeySetView(store.load, keys.public, SLOTS, clock=clock)


def test_the_view_trusts_exactly_the_published_set() -> None:
    store, keys, clock = Store(rotating()), Keys(), FixedClock(NOW)
    v = view(store, keys, clock)
    assert v.resolve("kid-a") is not None
    assert v.resolve("kid-b") is not None  # next: published, so trusted
    assert v.resolve("kid-stranger") is None
    clock.now = RETIRE
    with pytest.raises(SigningKeyRetired) as refused:
        v.resolve("kid-a")
    assert refused.value.reason == "signing_key_retired"
    assert refused.value.error == "invalid_token"
    assert [k.kid for k in v.jwks()] == ["kid-b"]


def test_the_view_retires_by_the_clock_without_rereading() -> None:
    store, keys, clock = Store(rotating()), Keys(), FixedClock(RETIRE - 1)
    v = view(store, keys, clock)
    v.resolve("kid-a")
    clock.now = RETIRE
    store.failing = True  # the store is unreachable: retirement still happens on time
    with pytest.raises(SigningKeyRetired):
        v.resolve("kid-a")


def test_a_cache_older_than_the_rotation_start_rereads_before_refusing_the_new_key() -> None:
    store, keys, clock = Store(KeySet(active=A)), Keys(), FixedClock(NOW)
    v = view(store, keys, clock)
    assert v.resolve("kid-a") is not None
    store.keyset = rotating()  # the admin rotated; this view's copy is fresh (age 0)
    assert v.resolve("kid-b") is not None
    assert store.reads == 2


def test_floods_of_a_retired_slots_kid_cost_one_reread_per_recheck_interval() -> None:
    store, keys, clock = Store(KeySet(active=A)), Keys(), FixedClock(NOW)
    v = view(store, keys, clock)
    for _ in range(100):
        with pytest.raises(SigningKeyRetired):
            v.resolve("kid-b")
    assert store.reads == 2  # the first read and one re-check
    for _ in range(100):
        assert v.resolve("kid-stranger") is None
    assert store.reads == 2  # strangers never cause a read
    assert sorted(set(keys.fetches)) == [A, B]  # each public key fetched once


def test_the_view_rereads_after_its_max_age() -> None:
    store, keys, clock = Store(KeySet(active=A)), Keys(), FixedClock(NOW)
    v = view(store, keys, clock)
    v.keyset()
    clock.advance(KEYSET_MAX_AGE - 1)
    v.keyset()
    assert store.reads == 1
    clock.advance(1)
    v.keyset()
    assert store.reads == 2


def test_an_unreadable_key_set_fails_closed_until_one_was_read_then_serves_the_last() -> None:
    store, keys, clock = Store(rotating()), Keys(), FixedClock(NOW)
    store.failing = True
    v = view(store, keys, clock)
    with pytest.raises(TemporarilyUnavailable):
        v.resolve("kid-a")
    clock.advance(2)
    store.failing = False
    assert v.resolve("kid-a") is not None
    store.failing = True
    clock.advance(KEYSET_MAX_AGE)
    assert v.resolve("kid-b") is not None  # the last key set, states moved by the clock


def test_a_key_set_naming_a_key_outside_the_template_slots_is_not_trusted() -> None:
    attacker = "arn:key/attacker"
    incoming = KeySet(active=A, rotation=Rotation(attacker, NOW, NOW, NOW + 9))
    store, keys, clock = Store(incoming), Keys(), FixedClock(NOW)
    v = view(store, keys, clock)
    assert [k.kid for k in v.jwks()] == ["kid-a"]  # the attacker's key is ignored
    assert attacker not in keys.fetches
    # a key set whose signing key is not a slot: nothing is trusted (a fresh reader)
    store.keyset = KeySet(active=attacker)
    with pytest.raises(ConfigurationError, match="not a template slot"):
        view(store, keys, clock).jwks()


def test_a_published_key_that_cannot_be_fetched_fails_closed() -> None:
    store, keys, clock = Store(rotating()), Keys(), FixedClock(NOW)
    keys.failing.add(B)
    v = view(store, keys, clock)
    with pytest.raises(TemporarilyUnavailable):
        v.resolve("kid-b")


def test_the_view_without_slots_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="SIGNING_KEY_SLOTS"):
        KeySetView(Store().load, Keys().public, (), clock=FixedClock(NOW))
