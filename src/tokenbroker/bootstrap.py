"""The composition root: settings, boto3 clients, adapters and services, wired by hand.
(Longer than ~400 lines on purpose: every service of every function is built here and
nowhere else, one short lazy property each.)

Nothing here runs at import time. ``default()`` reads the environment once, on first
use, and is cached for the life of the execution environment (Lambda reuses it across
invocations); each service and client is built on first use so a function pays only for
what it uses. Tests call ``build`` with moto clients or fakes.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tokenbroker.domain.clock import Clock
from tokenbroker.domain.errors import ConfigurationError
from tokenbroker.domain.keycache import KeyCache
from tokenbroker.domain.rfc9449 import ProofPolicy
from tokenbroker.settings import Settings

# Services and adapters are imported where they are built: each Lambda imports only what
# it uses (the authorizer's cold start is budgeted; see benchmarks/).
if TYPE_CHECKING:
    from tokenbroker.adapters.archive import ArchiveReader, ArchiveWriter
    from tokenbroker.adapters.idps import DynamoIdpDirectory, IssuerKeys
    from tokenbroker.adapters.people import DynamoPeopleDirectory
    from tokenbroker.domain.keyset import KeySetView
    from tokenbroker.domain.liveness import LivenessView
    from tokenbroker.domain.nonces import NonceService
    from tokenbroker.domain.ports import (
        ClientDirectory,
        DigestDispatcher,
        DigestSigner,
        Signer,
        TokenLedger,
        UsageLedger,
    )
    from tokenbroker.domain.published_keys import PublishedKeys
    from tokenbroker.domain.quotas import FoldPolicy, QuotaStore
    from tokenbroker.services.admin import AdminService
    from tokenbroker.services.aggregates import AggregatesService
    from tokenbroker.services.audit import AuditService
    from tokenbroker.services.authorization import AuthorizationService
    from tokenbroker.services.client_auth import ClientAuthenticator
    from tokenbroker.services.containment import ContainmentService
    from tokenbroker.services.digests import DigestService
    from tokenbroker.services.discovery import DiscoveryService
    from tokenbroker.services.exchange import ExchangeService
    from tokenbroker.services.introspection import IntrospectionService
    from tokenbroker.services.issuance import IssuanceService
    from tokenbroker.services.keys import KeyRotationService
    from tokenbroker.services.own_tokens import TokenCheck
    from tokenbroker.services.quotas import QuotaAdmin, QuotaGate, UnitsReporter
    from tokenbroker.services.refresh import RefreshService
    from tokenbroker.services.revocation import RevocationService
    from tokenbroker.services.sharing import AlertsService, SharingService

ClientFactory = Callable[[str], Any]


class Container:
    """Services for one deployment. Built complete; members are created on first use."""

    def __init__(
        self,
        settings: Settings,
        *,
        aws: ClientFactory,
        clock: Clock = time.time,
        directory: ClientDirectory | None = None,
        ledger: TokenLedger | None = None,
        signer: Signer | None = None,
        usage: UsageLedger | None = None,
        liveness: LivenessView | None = None,
        key_cache: KeyCache | PublishedKeys | None = None,
        issuer_keys: IssuerKeys | None = None,
        actor: str = "",
    ) -> None:
        """``actor``: who acts through the admin service (the CLI passes the caller's
        IAM ARN); named in the ledger record of every admin action."""
        self.settings = settings
        self._aws = aws
        self.clock = clock
        self.actor = actor
        self._overrides: dict[str, Any] = {
            "directory": directory,
            "ledger": ledger,
            "signer": signer,
            "usage": usage,
            "liveness": liveness,
            "key_cache": key_cache,
            "issuer_keys": issuer_keys,
        }
        self._lock = threading.RLock()
        self._built: dict[str, Any] = {}

    def _once(self, name: str, factory: Callable[[], Any]) -> Any:
        with self._lock:
            if name not in self._built:
                override = self._overrides.get(name)
                self._built[name] = override if override is not None else factory()
            return self._built[name]

    def client(self, service: str) -> Any:
        return self._once(f"client:{service}", lambda: self._aws(service))

    # ---- adapters ---------------------------------------------------------------------
    @property
    def directory(self) -> ClientDirectory:
        def make() -> ClientDirectory:
            from tokenbroker.adapters.dynamodb import DynamoClientDirectory

            self.settings.require("clients_table", "devices_table", "usage_table")
            return DynamoClientDirectory(
                self.client("dynamodb"),
                clients_table=self.settings.clients_table,
                devices_table=self.settings.devices_table,
                usage_table=self.settings.usage_table,
                hot_window_days=self.settings.usage_hot_window_days,
                people_table=self.settings.people_table,
            )

        return self._once("directory", make)  # type: ignore[no-any-return]

    @property
    def ledger(self) -> TokenLedger:
        def make() -> TokenLedger:
            from tokenbroker.adapters.dynamodb import DynamoTokenLedger

            self.settings.require("tokens_table", "usage_table")
            return DynamoTokenLedger(
                self.client("dynamodb"),
                tokens_table=self.settings.tokens_table,
                usage_table=self.settings.usage_table,
                hot_window_days=self.settings.usage_hot_window_days,
            )

        return self._once("ledger", make)  # type: ignore[no-any-return]

    @property
    def signer(self) -> Signer:
        def make() -> Signer:
            from tokenbroker.adapters.kms import KmsSigner

            if self.settings.key_set_parameter:  # signing key rotation (adapters/keyset.py)
                from tokenbroker.adapters.keyset import KeySetSigner

                return KeySetSigner(self.client("kms"), self.keyset_view, clock=self.clock)
            self.settings.require("signing_key_id")
            return KmsSigner(self.client("kms"), self.settings.signing_key_id)

        return self._once("signer", make)  # type: ignore[no-any-return]

    # ---- services ---------------------------------------------------------------------
    @property
    def proof_policy(self) -> ProofPolicy:
        nonces = self.token_nonces  # the token endpoint's grants (None: no nonces)
        return ProofPolicy(
            max_age=self.settings.proof_max_age,
            skew=self.settings.clock_skew,
            check_nonce=nonces.check if nonces is not None else None,
        )

    # ---- RFC 9449 §8/§9 server nonces (domain/nonces.py) ----------------------------
    def _nonces(self, endpoint: str) -> NonceService | None:
        s = self.settings
        if s.dpop_nonce_required != "true":
            return None

        def make() -> NonceService:
            from tokenbroker.adapters.nonce_secret import SecretsManagerNonceSecrets
            from tokenbroker.domain.nonces import NoncePolicy, NonceService

            secrets = self._once(
                "nonce_secrets",
                lambda: SecretsManagerNonceSecrets(
                    self.client("secretsmanager"), s.dpop_nonce_secret_arn, clock=self.clock
                ),
            )
            return NonceService(
                secrets, endpoint=endpoint, policy=NoncePolicy(s.dpop_nonce_step_seconds)
            )

        return self._once(f"nonces:{endpoint}", make)  # type: ignore[no-any-return]

    @property
    def token_nonces(self) -> NonceService | None:
        """The token endpoint's nonces, when this function requires them."""
        return self._nonces("token")

    @property
    def resource_nonces(self) -> NonceService | None:
        """The edge's nonces, when this function requires them."""
        return self._nonces("resource")

    @property
    def issuance(self) -> IssuanceService:
        def make() -> IssuanceService:
            from tokenbroker.services.issuance import IssuancePolicy, IssuanceService

            s = self.settings
            return IssuanceService(
                directory=self.directory,
                ledger=self.ledger,
                signer=self.signer,
                clock=self.clock,
                policy=IssuancePolicy(
                    issuer=s.issuer,
                    audiences=s.audiences,
                    lifetime=s.token_lifetime,
                    proof=self.proof_policy,
                    record_retention_days=s.token_record_retention_days,
                    usage_retention_days=s.usage_retention_days,
                ),
                authenticator=self.client_authenticator,  # RFC 7523 at every grant
            )

        return self._once("issuance", make)  # type: ignore[no-any-return]

    # ---- people as principals (token exchange, self-service devices) -----------------
    @property
    def idps(self) -> DynamoIdpDirectory:
        def make() -> DynamoIdpDirectory:
            from tokenbroker.adapters.idps import DynamoIdpDirectory

            self.settings.require("idps_table")
            return DynamoIdpDirectory(
                self.client("dynamodb"), table=self.settings.idps_table, clock=self.clock
            )

        return self._once("idps", make)  # type: ignore[no-any-return]

    @property
    def issuer_keys(self) -> IssuerKeys:
        def make() -> IssuerKeys:
            from tokenbroker.adapters.idps import IssuerKeys

            return IssuerKeys(clock=self.clock)

        return self._once("issuer_keys", make)  # type: ignore[no-any-return]

    @property
    def people(self) -> DynamoPeopleDirectory:
        def make() -> DynamoPeopleDirectory:
            from tokenbroker.adapters.people import DynamoPeopleDirectory

            s = self.settings
            s.require("people_table", "clients_table", "devices_table", "usage_table")
            return DynamoPeopleDirectory(
                self.client("dynamodb"),
                people_table=s.people_table,
                clients_table=s.clients_table,
                devices_table=s.devices_table,
                usage_table=s.usage_table,
                hot_window_days=s.usage_hot_window_days,
            )

        return self._once("people", make)  # type: ignore[no-any-return]

    @property
    def exchange(self) -> ExchangeService:
        def make() -> ExchangeService:
            from tokenbroker.services.exchange import ExchangePolicy, ExchangeService

            s = self.settings
            return ExchangeService(
                people=self.people,
                idps=self.idps,
                keys=self.issuer_keys,
                issuance=lambda: self.issuance,
                refresh=lambda: self.refresh if s.refresh_tokens_table else None,
                clear_step_up=self._clear_step_up,
                authenticator=self.client_authenticator,  # RFC 7523 at every grant
                issuer=s.issuer,
                clock=self.clock,
                policy=ExchangePolicy(
                    proof=self.proof_policy,
                    skew=s.clock_skew,
                    max_devices_per_person=s.max_devices_per_person,
                    usage_retention_days=s.usage_retention_days,
                ),
            )

        return self._once("exchange", make)  # type: ignore[no-any-return]

    @property
    def refresh(self) -> RefreshService:
        def make() -> RefreshService:
            from tokenbroker.adapters.refresh import DynamoRefreshStore
            from tokenbroker.services.refresh import RefreshPolicy, RefreshService

            s = self.settings
            s.require(
                "refresh_tokens_table",
                "tokens_table",
                "usage_table",
                "clients_table",
                "devices_table",
                "people_table",
            )
            store = DynamoRefreshStore(
                self.client("dynamodb"),
                refresh_table=s.refresh_tokens_table,
                tokens_table=s.tokens_table,
                usage_table=s.usage_table,
                hot_window_days=s.usage_hot_window_days,
                clients_table=s.clients_table,
                devices_table=s.devices_table,
                people_table=s.people_table,
            )
            return RefreshService(
                store=store,
                issuance=lambda: self.issuance,
                clock=self.clock,
                policy=RefreshPolicy(
                    proof=self.proof_policy,
                    absolute=s.refresh_absolute_seconds,
                    idle=s.refresh_idle_seconds,
                    usage_retention_days=s.usage_retention_days,
                ),
            )

        return self._once("refresh", make)  # type: ignore[no-any-return]

    @property
    def discovery(self) -> DiscoveryService:
        def make() -> DiscoveryService:
            from tokenbroker.services.discovery import DiscoveryService

            s = self.settings
            return DiscoveryService(
                signer=self.signer,
                issuer=s.issuer,
                token_path=s.token_endpoint_path,
                jwks_path=s.jwks_path,
                endpoint_paths={  # services/registry.py ENDPOINTS
                    "revocation_endpoint_path": s.revocation_endpoint_path,
                    "introspection_endpoint_path": s.introspection_endpoint_path,
                    "device_enrollment_path": s.device_enrollment_path,
                },
            )

        return self._once("discovery", make)  # type: ignore[no-any-return]

    @property
    def key_cache(self) -> KeyCache | KeySetView | PublishedKeys:
        def make() -> KeyCache | KeySetView | PublishedKeys:
            from tokenbroker.adapters.kms import KmsPublicKeySource

            if self.settings.key_set_parameter:  # trusts exactly the published key set
                return self.keyset_view

            self.settings.require("signing_key_id")
            ids = tuple(k.strip() for k in self.settings.signing_key_id.split(",") if k.strip())
            source = KmsPublicKeySource(self.client("kms"), ids)
            return KeyCache(source.fetch, clock=self.clock)

        return self._once("key_cache", make)  # type: ignore[no-any-return]

    @property
    def usage(self) -> UsageLedger:
        def make() -> UsageLedger:
            from tokenbroker.adapters.usage import DynamoUsageLedger

            s = self.settings
            s.require("usage_table")
            return DynamoUsageLedger(
                self.client("dynamodb"),
                usage_table=s.usage_table,
                hot_window_days=s.usage_hot_window_days,
            )

        return self._once("usage", make)  # type: ignore[no-any-return]

    @property
    def liveness(self) -> LivenessView:
        """The edge's bounded-staleness view of clients and devices (domain/liveness.py)."""

        def make() -> LivenessView:
            from tokenbroker.adapters.usage import DynamoLiveness
            from tokenbroker.domain.liveness import LivenessView

            s = self.settings
            s.require("clients_table", "devices_table")
            source = DynamoLiveness(
                self.client("dynamodb"),
                clients_table=s.clients_table,
                devices_table=s.devices_table,
                riders=self._quota_riders(),
            )
            return LivenessView(source.fetch, clock=self.clock)

        return self._once("liveness", make)  # type: ignore[no-any-return]

    @property
    def authorization(self) -> AuthorizationService:
        def make() -> AuthorizationService:
            from tokenbroker.services.authorization import AuthorizationService, ResourcePolicy

            s = self.settings
            s.require("audience")
            return AuthorizationService(
                resolve_key=self.key_cache.resolve,
                usage=self.usage,
                liveness=self.liveness,
                clock=self.clock,
                policy=ResourcePolicy(
                    issuer=s.issuer,
                    audience=s.audience,
                    route_scopes=dict(s.route_scopes),
                    proof=self._edge_proof_policy(),
                    usage_retention_days=s.usage_retention_days,
                ),
                quotas=self.quota_gate,
            )

        return self._once("authorization", make)  # type: ignore[no-any-return]

    def _edge_proof_policy(self) -> ProofPolicy:
        nonces = self.resource_nonces
        return ProofPolicy(
            max_age=self.settings.proof_max_age,
            skew=self.settings.clock_skew,
            check_nonce=nonces.check if nonces is not None else None,
        )

    @property
    def aggregates(self) -> AggregatesService:
        """The stream function's service: batches of ledger records -> aggregates."""

        def make() -> AggregatesService:
            from tokenbroker.adapters.aggregates import DynamoAggregatesStore
            from tokenbroker.adapters.ledger_items import from_plain
            from tokenbroker.services.aggregates import AggregatesService

            self.settings.require("aggregates_table")
            store = DynamoAggregatesStore(
                self.client("dynamodb"), table=self.settings.aggregates_table
            )
            return AggregatesService(store=store, decode=from_plain)

        return self._once("aggregates", make)  # type: ignore[no-any-return]

    @property
    def audit(self) -> AuditService:
        """The auditors' queries: the hot tier through its time index, the archive
        tier (with a digest bucket), and the aggregates."""

        def make() -> AuditService:
            from tokenbroker.adapters.aggregates import AggregatesReader
            from tokenbroker.adapters.archive_index import HotIndex
            from tokenbroker.services.audit import AuditService

            s = self.settings
            # the hot tier is read through the stream-built time index (no usage GSI),
            # kept in the aggregates table
            s.require("usage_table", "aggregates_table")
            ddb = self.client("dynamodb")
            reader = AggregatesReader(ddb, table=s.aggregates_table)
            index = HotIndex(ddb, table=s.aggregates_table, usage_table=s.usage_table)
            if s.digest_bucket:  # the archive tier (tokenbroker.services.audit_tiers)
                from tokenbroker.adapters.ledger_items import from_plain
                from tokenbroker.services.audit_tiers import AuditTiers

                return AuditTiers(
                    index,
                    archive=self.archive_reader,
                    decode=from_plain,
                    hot_window_days=s.usage_hot_window_days,
                    aggregates=reader,
                    clock=self.clock,
                )
            return AuditService(index, aggregates=reader)

        return self._once("audit", make)  # type: ignore[no-any-return]

    @property
    def digests(self) -> DigestService:
        """Seals and verifies the ledger's digests, trusting the deployment's key."""

        def make() -> DigestService:
            from tokenbroker.adapters.archive_hot import HotLedgerHashes
            from tokenbroker.adapters.digest_store import S3DigestStore
            from tokenbroker.services.digests import DigestService

            s = self.settings
            s.require("usage_table", "digest_bucket", "digest_key_id")
            return DigestService(
                store=S3DigestStore(self.client("s3"), bucket=s.digest_bucket),
                # the archive tier (adapters/archive.py); ledger_scan.LedgerScanner stays
                # until the by_hour index goes
                ledger=self.archive_reader,
                hot=HotLedgerHashes(self.client("dynamodb"), table=s.usage_table),
                hot_window_days=s.usage_hot_window_days,
                signer=self.digest_key(s.digest_key_id),
                period_seconds=s.digest_period_seconds,
                grace_seconds=s.digest_grace_seconds,
                clock=self.clock,
            )

        return self._once("digests", make)  # type: ignore[no-any-return]

    @property
    def digest_dispatcher(self) -> DigestDispatcher | None:
        """Where the digest function hands segments it has no time for (None: the next
        scheduled run goes on)."""
        name = self.settings.digest_worker_function
        if not name:
            return None
        from tokenbroker.adapters.digest_dispatch import LambdaDispatcher

        return LambdaDispatcher(self.client("lambda"), name)

    @property
    def archive_reader(self) -> ArchiveReader:
        """The usage archive (cold tier) in the digest bucket."""

        def make() -> ArchiveReader:
            from tokenbroker.adapters.archive import ArchiveReader

            self.settings.require("digest_bucket")
            return ArchiveReader(self.client("s3"), bucket=self.settings.digest_bucket)

        return self._once("archive_reader", make)  # type: ignore[no-any-return]

    @property
    def archive_writer(self) -> ArchiveWriter:
        """Writes usage stream batches into the archive (functions/archive)."""

        def make() -> ArchiveWriter:
            from tokenbroker.adapters.archive import ArchiveWriter

            s = self.settings
            s.require("digest_bucket")
            index = None
            if s.aggregates_table:  # the hot tier's time index (adapters/archive_index.py)
                from tokenbroker.adapters.archive_index import HotIndexWriter

                index = HotIndexWriter(
                    self.client("dynamodb"),
                    table=s.aggregates_table,
                    hot_window_days=s.usage_hot_window_days,
                )
            return ArchiveWriter(self.client("s3"), bucket=s.digest_bucket, index=index)

        return self._once("archive_writer", make)  # type: ignore[no-any-return]

    def digest_key(self, key_id: str) -> DigestSigner:
        """A KMS digest key (the deployment's, or one an auditor pins to verify with)."""
        from tokenbroker.adapters.digest_keys import KmsDigestKey

        return KmsDigestKey(self.client("kms"), key_id)

    @property
    def sharing(self) -> SharingService | None:
        """The stream's sharing rules (None when the deployment has no sharing table)."""

        def make() -> SharingService | None:
            from tokenbroker.adapters.alerts import AlertPublisher, DynamoSharingStore
            from tokenbroker.adapters.ledger_items import from_plain
            from tokenbroker.domain.sharing import parse_rules
            from tokenbroker.services.sharing import SharingService

            s = self.settings
            if not s.sharing_table:
                return None
            s.require("usage_table")
            ddb = self.client("dynamodb")
            return SharingService(
                store=DynamoSharingStore(
                    ddb,
                    table=s.sharing_table,
                    usage_table=s.usage_table,
                    hot_window_days=s.usage_hot_window_days,
                ),
                publisher=AlertPublisher(
                    events=self.client("events"),
                    sns=self.client("sns"),
                    topic_arn=s.sharing_topic_arn,
                ),
                containment=self.containment,
                decode=from_plain,
                rules=parse_rules(s.sharing_rules),
                clock=self.clock,
                retention_days=s.usage_retention_days,
            )

        return self._once("sharing", make)  # type: ignore[no-any-return]

    @property
    def alerts(self) -> AlertsService:
        """``tokenbroker alerts list|ack`` (the sharing table)."""

        def make() -> AlertsService:
            from tokenbroker.adapters.alerts import DynamoSharingStore
            from tokenbroker.services.sharing import AlertsService

            s = self.settings
            s.require("sharing_table")
            store = DynamoSharingStore(
                self.client("dynamodb"),
                table=s.sharing_table,
                usage_table=s.usage_table,
                hot_window_days=s.usage_hot_window_days,
            )
            return AlertsService(store=store, clock=self.clock, actor=self.actor)

        return self._once("alerts", make)  # type: ignore[no-any-return]

    def _clear_step_up(self, jkt: str) -> None:
        """A passed token exchange lifts the device's containment step_up."""
        from tokenbroker.adapters.alerts import DynamoContainmentStore

        s = self.settings
        DynamoContainmentStore(
            self.client("dynamodb"),
            clients_table=s.clients_table,
            devices_table=s.devices_table,
            usage_table=s.usage_table,
            hot_window_days=s.usage_hot_window_days,
        ).clear_step_up(jkt)

    @property
    def containment(self) -> ContainmentService:
        """Containment modes per client; revocations go through the admin service."""

        def make() -> ContainmentService:
            from tokenbroker.adapters.alerts import DynamoContainmentStore
            from tokenbroker.domain.sharing import parse_mode
            from tokenbroker.services.admin import AdminService
            from tokenbroker.services.containment import ContainmentService

            s = self.settings
            s.require("clients_table", "devices_table", "usage_table")
            actor = self.actor or "tokenbroker:sharing"
            return ContainmentService(
                store=DynamoContainmentStore(
                    self.client("dynamodb"),
                    clients_table=s.clients_table,
                    devices_table=s.devices_table,
                    usage_table=s.usage_table,
                    hot_window_days=s.usage_hot_window_days,
                ),
                revoker=AdminService(
                    directory=self.directory,
                    clock=self.clock,
                    actor=actor,
                    retention_days=s.usage_retention_days,
                ),
                clock=self.clock,
                default_mode=parse_mode(s.containment_default),
                actor=actor,
                retention_days=s.usage_retention_days,
            )

        return self._once("containment", make)  # type: ignore[no-any-return]

    @property
    def admin(self) -> AdminService:
        return self._once(  # type: ignore[no-any-return]
            "admin", self._make_admin
        )

    # ---- signing key rotation (domain/keyset.py) ---------------------------------------
    @property
    def keyset_view(self) -> KeySetView:
        def make() -> KeySetView:
            from tokenbroker.adapters.keyset import keyset_view

            s = self.settings
            s.require("key_set_parameter", "signing_key_slots", "signing_key_id")
            return keyset_view(
                self.client("kms"),
                self.client("ssm"),
                parameter=s.key_set_parameter,
                slots=key_slots(s),
                clock=self.clock,
            )

        return self._once("keyset_view", make)  # type: ignore[no-any-return]

    @property
    def key_rotation(self) -> KeyRotationService:
        def make() -> KeyRotationService:
            from tokenbroker.adapters.keyset import DynamoKeyEvents, SsmKeySetStore
            from tokenbroker.services.keys import KeyRotationService

            s = self.settings
            s.require("usage_table")
            view = self.keyset_view
            return KeyRotationService(
                store=SsmKeySetStore(self.client("ssm"), s.key_set_parameter),
                slots=view.slots,
                public_jwk=lambda key_id: view.key(key_id)[0],
                record=DynamoKeyEvents(
                    self.client("dynamodb"), s.usage_table, hot_window_days=s.usage_hot_window_days
                ).record,
                clock=self.clock,
                actor=self.actor,
                skew=s.clock_skew,
                retention_days=s.usage_retention_days,
            )

        return self._once("key_rotation", make)  # type: ignore[no-any-return]

    def _make_admin(self) -> AdminService:
        from tokenbroker.services.admin import AdminService

        return AdminService(
            directory=self.directory,
            clock=self.clock,
            actor=self.actor,
            retention_days=self.settings.usage_retention_days,
        )

    # ---- RFC 7009 revocation, RFC 7662 introspection (services/revocation.py) --------
    @property
    def token_check(self) -> TokenCheck:
        from tokenbroker.services.own_tokens import TokenCheck

        s = self.settings
        return TokenCheck(
            resolve_key=self.key_cache.resolve,
            issuer=s.issuer,
            audiences=s.audiences,
            skew=s.clock_skew,
        )

    @property
    def client_authenticator(self) -> ClientAuthenticator:
        from tokenbroker.adapters.client_keys import DynamoClientKeys
        from tokenbroker.services.client_auth import ClientAuthenticator

        s = self.settings
        replay = (
            DynamoClientKeys(
                self.client("dynamodb"),
                clients_table=s.clients_table,
                usage_table=s.usage_table,
                hot_window_days=s.usage_hot_window_days,
                tokens_table=s.tokens_table,
            )
            if s.tokens_table
            else None
        )
        return ClientAuthenticator(
            directory=self.directory, replay=replay, clock=self.clock, skew=s.clock_skew
        )

    def set_client_jwk(self, client_id: str, jwk_text: str, *, remove_secret: bool) -> str:
        """Admin (``tokenbroker clients set-jwk``): services/client_keys.py."""
        from tokenbroker.adapters.client_keys import DynamoClientKeys
        from tokenbroker.services.client_keys import set_client_jwk

        s = self.settings
        s.require("clients_table", "usage_table")
        store = DynamoClientKeys(
            self.client("dynamodb"),
            clients_table=s.clients_table,
            usage_table=s.usage_table,
            hot_window_days=s.usage_hot_window_days,
        )
        return set_client_jwk(
            store,
            client_id=client_id,
            jwk_text=jwk_text,
            remove_secret=remove_secret,
            clock=self.clock,
            actor=self.actor,
            retention_days=s.usage_retention_days,
        )

    @property
    def revocation(self) -> RevocationService:
        def make() -> RevocationService:
            from tokenbroker.adapters.refresh import DynamoRefreshStore
            from tokenbroker.adapters.revocations import DynamoRevocations
            from tokenbroker.services.revocation import RevocationPolicy, RevocationService

            s = self.settings
            s.require("devices_table", "usage_table")
            families = (
                DynamoRefreshStore(
                    self.client("dynamodb"),
                    refresh_table=s.refresh_tokens_table,
                    tokens_table=s.tokens_table,
                    usage_table=s.usage_table,
                    hot_window_days=s.usage_hot_window_days,
                    clients_table=s.clients_table,
                    devices_table=s.devices_table,
                    people_table=s.people_table,
                )
                if s.refresh_tokens_table and s.people_table
                else None
            )
            return RevocationService(
                authenticator=self.client_authenticator,
                tokens=self.token_check,
                access=DynamoRevocations(
                    self.client("dynamodb"),
                    devices_table=s.devices_table,
                    usage_table=s.usage_table,
                    hot_window_days=s.usage_hot_window_days,
                ),
                refresh=families,
                clock=self.clock,
                policy=RevocationPolicy(usage_retention_days=s.usage_retention_days),
            )

        return self._once("revocation", make)  # type: ignore[no-any-return]

    @property
    def introspection(self) -> IntrospectionService:
        def make() -> IntrospectionService:
            from tokenbroker.adapters.usage import DynamoLiveness
            from tokenbroker.services.introspection import IntrospectionService

            s = self.settings
            s.require("clients_table", "devices_table")
            fresh = DynamoLiveness(
                self.client("dynamodb"),
                clients_table=s.clients_table,
                devices_table=s.devices_table,
            )
            return IntrospectionService(
                authenticator=self.client_authenticator,
                tokens=self.token_check,
                liveness=fresh.fetch,
                clock=self.clock,
            )

        return self._once("introspection", make)  # type: ignore[no-any-return]

    # ---- quotas (domain/quotas.py) ----------------------------------------------------
    @property
    def quota_store(self) -> QuotaStore:
        def make() -> QuotaStore:
            from tokenbroker.adapters.quotas import DynamoQuotaStore

            self.settings.require("quotas_table")
            return DynamoQuotaStore(
                self.client("dynamodb"),
                table=self.settings.quotas_table,
                usage_table=self.settings.usage_table,  # units reports' ledger events
                hot_window_days=self.settings.usage_hot_window_days,
            )

        return self._once("quota_store", make)  # type: ignore[no-any-return]

    @property
    def quota_gate(self) -> QuotaGate | None:
        """The edge's quota gate; None when the deployment declares no quota table."""
        if not self.settings.quotas_table:
            return None

        def make() -> QuotaGate:
            from tokenbroker.domain.quotas import QuotaLimits
            from tokenbroker.services.quotas import QuotaGate

            s = self.settings
            defaults = QuotaLimits(
                s.default_requests_per_minute, s.default_requests_per_day, s.default_units_per_day
            )
            # the rules ride in the liveness read (_quota_riders): they live as long
            from tokenbroker.domain.liveness import MAX_AGE

            return QuotaGate(
                self.quota_store,
                defaults=defaults,
                clock=self.clock,
                config_ttl=MAX_AGE,
                fold=self._quota_fold(),
            )

        return self._once("quota_gate", make)  # type: ignore[no-any-return]

    def _quota_fold(self) -> FoldPolicy:
        """QUOTA_LEASE_FOLD (template parameter QuotaLeaseFold), when a folded lease
        writes the very usage item the edge's ledger would: the quota store's transaction
        puts the record in its usage table itself, so it folds only if this container's
        UsageLedger is the Dynamo ledger of that same table (and hot window). Any other
        ledger (an injected one: a fake, another sink) gets separate leases (``never``):
        folding would bypass it."""
        from tokenbroker.adapters.quotas import DynamoQuotaStore
        from tokenbroker.adapters.usage import DynamoUsageLedger
        from tokenbroker.domain.quotas import FoldPolicy

        policy = FoldPolicy(self.settings.quota_lease_fold)
        if policy is FoldPolicy.NEVER or not self.settings.usage_table:
            return FoldPolicy.NEVER
        store, ledger = self.quota_store, self.usage
        if not (isinstance(store, DynamoQuotaStore) and isinstance(ledger, DynamoUsageLedger)):
            return FoldPolicy.NEVER
        return policy if store.writes_usage_like(ledger) else FoldPolicy.NEVER

    def _quota_riders(self) -> tuple[Any, ...]:
        """The quota rules item, read inside the edge's liveness BatchGetItem."""
        gate = self.quota_gate
        if gate is None:
            return ()
        from tokenbroker.adapters.quotas import RulesRider

        return (RulesRider(table=self.settings.quotas_table, deliver=gate.rules_read),)

    @property
    def units_reporter(self) -> UnitsReporter:
        def make() -> UnitsReporter:
            from tokenbroker.services.quotas import UnitsReporter

            return UnitsReporter(
                self.quota_store,
                clock=self.clock,
                retention_days=self.settings.usage_retention_days,
            )

        return self._once("units_reporter", make)  # type: ignore[no-any-return]

    @property
    def quota_admin(self) -> QuotaAdmin:
        def make() -> QuotaAdmin:
            from tokenbroker.adapters.quotas import DynamoQuotaStore
            from tokenbroker.services.quotas import QuotaAdmin

            self.settings.require("quotas_table")
            store = DynamoQuotaStore(self.client("dynamodb"), table=self.settings.quotas_table)
            return QuotaAdmin(store, clock=self.clock)

        return self._once("quota_admin", make)  # type: ignore[no-any-return]


def key_slots(settings: Settings) -> tuple[str, ...]:
    """The template's signing key slots, SIGNING_KEY_ID (slot A, the key that signs
    until the first rotation) first."""
    first = settings.signing_key_id
    if first not in settings.signing_key_slots:
        raise ConfigurationError("SIGNING_KEY_ID must be one of SIGNING_KEY_SLOTS")
    return (first, *(k for k in settings.signing_key_slots if k != first))


def lambda_clients(service: str) -> Any:
    from tokenbroker.adapters.aws import client

    return client(service)


def regional_clients(region: str, *, config: Any = None, botocore_data: str = "") -> ClientFactory:
    """Clients of one region from the standard configuration chain: for a function that
    runs away from its tables and key (Lambda@Edge runs in the viewer's region).
    ``config``: a botocore Config (e.g. the edge's tighter timeouts); default Lambda's.
    ``botocore_data``: as :func:`edge_clients` (the cut models for their services)."""

    def make(service: str) -> Any:
        from tokenbroker.adapters.aws import client

        session = _edge_session(service, botocore_data) if botocore_data else None
        if config is None:
            return client(service, region=region, session=session)
        return client(service, region=region, config=config, session=session)

    return make


def _edge_session(service: str, data: str) -> Any:
    """The cut-data session for ``service`` (None: botocore's full data): ``data`` is
    ``edge`` (the package's own directory, as the layer build writes it) or a path."""
    from tokenbroker.adapters.aws import edge_session
    from tokenbroker.adapters.aws_models import DEFAULT_DIR, EDGE_SERVICES

    if service not in EDGE_SERVICES:
        return None
    return edge_session(str(DEFAULT_DIR) if data == "edge" else data)


def edge_clients(data: str) -> ClientFactory:
    """The authorizers' clients (``BOTOCORE_DATA``): those of the services the cut
    botocore data holds read it (adapters/aws_models.py: one fifth of the full models'
    client cost), every other one botocore's full data; all with Lambda's config."""

    def make(service: str) -> Any:
        from tokenbroker.adapters.aws import client

        return client(service, session=_edge_session(service, data))

    return make


def build(settings: Settings, *, aws: ClientFactory = lambda_clients, **kw: Any) -> Container:
    return Container(settings, aws=aws, **kw)


@functools.cache
def default() -> Container:
    """The execution environment's container, from ``os.environ`` (read once)."""
    settings = Settings.from_mapping(os.environ)
    if settings.botocore_data:
        return build(settings, aws=edge_clients(settings.botocore_data))
    return build(settings)
