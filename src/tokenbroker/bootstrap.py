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
from tokenbroker.domain.keycache import KeyCache
from tokenbroker.domain.rfc9449 import ProofPolicy
from tokenbroker.settings import Settings

# Services and adapters are imported where they are built: each Lambda imports only what
# it uses (the authorizer's cold start is budgeted; see benchmarks/).
if TYPE_CHECKING:
    from tokenbroker.adapters.idps import DynamoIdpDirectory, IssuerKeys
    from tokenbroker.adapters.people import DynamoPeopleDirectory
    from tokenbroker.domain.liveness import LivenessView
    from tokenbroker.domain.ports import (
        ClientDirectory,
        DigestDispatcher,
        DigestSigner,
        Signer,
        TokenLedger,
        UsageLedger,
    )
    from tokenbroker.services.admin import AdminService
    from tokenbroker.services.aggregates import AggregatesService
    from tokenbroker.services.audit import AuditService
    from tokenbroker.services.authorization import AuthorizationService
    from tokenbroker.services.digests import DigestService
    from tokenbroker.services.discovery import DiscoveryService
    from tokenbroker.services.exchange import ExchangeService
    from tokenbroker.services.issuance import IssuanceService
    from tokenbroker.services.refresh import RefreshService

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
        key_cache: KeyCache | None = None,
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
            )

        return self._once("ledger", make)  # type: ignore[no-any-return]

    @property
    def signer(self) -> Signer:
        def make() -> Signer:
            from tokenbroker.adapters.kms import KmsSigner

            self.settings.require("signing_key_id")
            return KmsSigner(self.client("kms"), self.settings.signing_key_id)

        return self._once("signer", make)  # type: ignore[no-any-return]

    # ---- services ---------------------------------------------------------------------
    @property
    def proof_policy(self) -> ProofPolicy:
        return ProofPolicy(max_age=self.settings.proof_max_age, skew=self.settings.clock_skew)

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
            )

        return self._once("discovery", make)  # type: ignore[no-any-return]

    @property
    def key_cache(self) -> KeyCache:
        def make() -> KeyCache:
            from tokenbroker.adapters.kms import KmsPublicKeySource

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
                    proof=self.proof_policy,
                    usage_retention_days=s.usage_retention_days,
                ),
            )

        return self._once("authorization", make)  # type: ignore[no-any-return]

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
        """The auditors' queries: the usage table's indexes, and (when the deployment
        keeps them) the aggregates and their hour registry."""

        def make() -> AuditService:
            from tokenbroker.adapters.aggregates import AggregatesReader
            from tokenbroker.adapters.ledger_query import DynamoLedgerQuery
            from tokenbroker.services.audit import AuditService

            s = self.settings
            s.require("usage_table")
            ddb = self.client("dynamodb")
            reader = AggregatesReader(ddb, table=s.aggregates_table) if s.aggregates_table else None
            return AuditService(
                DynamoLedgerQuery(ddb, usage_table=s.usage_table),
                aggregates=reader,
                registry=reader,
                clock=self.clock,
                # an export holds shards (256) x this many records (~10 MB) at most
                export_page_size=50,
            )

        return self._once("audit", make)  # type: ignore[no-any-return]

    @property
    def digests(self) -> DigestService:
        """Seals and verifies the ledger's digests, trusting the deployment's key."""

        def make() -> DigestService:
            from tokenbroker.adapters.digest_store import S3DigestStore
            from tokenbroker.adapters.ledger_scan import LedgerScanner
            from tokenbroker.services.digests import DigestService

            s = self.settings
            s.require("usage_table", "digest_bucket", "digest_key_id")
            return DigestService(
                store=S3DigestStore(self.client("s3"), bucket=s.digest_bucket),
                ledger=LedgerScanner(self.client("dynamodb"), table=s.usage_table),
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

    def digest_key(self, key_id: str) -> DigestSigner:
        """A KMS digest key (the deployment's, or one an auditor pins to verify with)."""
        from tokenbroker.adapters.digest_keys import KmsDigestKey

        return KmsDigestKey(self.client("kms"), key_id)

    @property
    def admin(self) -> AdminService:
        return self._once(  # type: ignore[no-any-return]
            "admin", self._make_admin
        )

    def _make_admin(self) -> AdminService:
        from tokenbroker.services.admin import AdminService

        return AdminService(
            directory=self.directory,
            clock=self.clock,
            actor=self.actor,
            retention_days=self.settings.usage_retention_days,
        )


def lambda_clients(service: str) -> Any:
    from tokenbroker.adapters.aws import client

    return client(service)


def regional_clients(region: str, *, config: Any = None) -> ClientFactory:
    """Clients of one region from the standard configuration chain: for a function that
    runs away from its tables and key (Lambda@Edge runs in the viewer's region).
    ``config``: a botocore Config (e.g. the edge's tighter timeouts); default Lambda's."""

    def make(service: str) -> Any:
        from tokenbroker.adapters.aws import client

        if config is None:
            return client(service, region=region)
        return client(service, region=region, config=config)

    return make


def build(settings: Settings, *, aws: ClientFactory = lambda_clients, **kw: Any) -> Container:
    return Container(settings, aws=aws, **kw)


@functools.cache
def default() -> Container:
    """The execution environment's container, from ``os.environ`` (read once)."""
    return build(Settings.from_mapping(os.environ))
