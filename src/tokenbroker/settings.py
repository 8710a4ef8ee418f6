"""Settings: one frozen dataclass, read once from a mapping of environment variables.

The variable names are declared in template.yaml (each function's
``Environment.Variables``); tests/test_template.py proves that every name read here is
declared there for the functions that need it, and that nothing else is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from tokenbroker.domain.errors import ConfigurationError
from tokenbroker.domain.quotas import FoldPolicy
from tokenbroker.domain.rfc9068 import MAX_LIFETIME


def _env(name: str) -> dict[str, str]:
    return {"env": name}


@dataclass(frozen=True)
class Settings:
    clients_table: str = field(default="", metadata=_env("CLIENTS_TABLE"))
    devices_table: str = field(default="", metadata=_env("DEVICES_TABLE"))
    tokens_table: str = field(default="", metadata=_env("TOKENS_TABLE"))
    usage_table: str = field(default="", metadata=_env("USAGE_TABLE"))
    signing_key_id: str = field(default="", metadata=_env("SIGNING_KEY_ID"))
    #: empty: derived from the URL each request was made to (execute-api domain + stage)
    issuer: str = field(default="", metadata=_env("ISSUER"))
    audiences: tuple[str, ...] = field(default=(), metadata=_env("AUDIENCES"))
    token_lifetime: int = field(default=300, metadata=_env("TOKEN_LIFETIME_SECONDS"))
    proof_max_age: int = field(default=60, metadata=_env("PROOF_MAX_AGE_SECONDS"))
    clock_skew: int = field(default=5, metadata=_env("CLOCK_SKEW_SECONDS"))
    token_record_retention_days: int = field(
        default=30, metadata=_env("TOKEN_RECORD_RETENTION_DAYS")
    )
    token_endpoint_path: str = field(default="/oauth2/token", metadata=_env("TOKEN_ENDPOINT_PATH"))
    jwks_path: str = field(default="/.well-known/jwks.json", metadata=_env("JWKS_PATH"))
    # RFC 7009 / RFC 7662 / self-service enrollment paths (published in the RFC 8414 metadata)
    revocation_endpoint_path: str = field(default="", metadata=_env("REVOCATION_ENDPOINT_PATH"))
    introspection_endpoint_path: str = field(
        default="", metadata=_env("INTROSPECTION_ENDPOINT_PATH")
    )
    device_enrollment_path: str = field(default="", metadata=_env("DEVICE_ENROLLMENT_PATH"))
    #: the audience of the API an authorizer protects (one API, one audience)
    audience: str = field(default="", metadata=_env("AUDIENCE"))
    #: JSON object "METHOD /route" -> required scope template ("" = any valid token)
    route_scopes: tuple[tuple[str, str], ...] = field(default=(), metadata=_env("ROUTE_SCOPES"))
    usage_retention_days: int = field(default=400, metadata=_env("USAGE_RETENTION_DAYS"))
    #: days the usage table answers audits; older records are read from the archive
    usage_hot_window_days: int = field(default=30, metadata=_env("USAGE_HOT_WINDOW_DAYS"))
    aggregates_table: str = field(default="", metadata=_env("AGGREGATES_TABLE"))
    digest_bucket: str = field(default="", metadata=_env("DIGEST_BUCKET"))
    digest_key_id: str = field(default="", metadata=_env("DIGEST_KEY_ID"))
    digest_grace_seconds: int = field(default=900, metadata=_env("DIGEST_GRACE_SECONDS"))
    digest_period_seconds: int = field(default=3600, metadata=_env("DIGEST_PERIOD_SECONDS"))
    #: the function that seals dispatched digest segments ("" = no fan-out)
    digest_worker_function: str = field(default="", metadata=_env("DIGEST_WORKER_FUNCTION"))
    #: people as principals (token exchange, self-service devices)
    idps_table: str = field(default="", metadata=_env("IDPS_TABLE"))
    people_table: str = field(default="", metadata=_env("PEOPLE_TABLE"))
    max_devices_per_person: int = field(default=3, metadata=_env("MAX_DEVICES_PER_PERSON"))
    #: refresh tokens for people's tokens ("" = token exchanges issue none)
    refresh_tokens_table: str = field(default="", metadata=_env("REFRESH_TOKENS_TABLE"))
    refresh_absolute_seconds: int = field(
        default=28_800, metadata=_env("REFRESH_TOKEN_ABSOLUTE_SECONDS")
    )
    refresh_idle_seconds: int = field(default=3_600, metadata=_env("REFRESH_TOKEN_IDLE_SECONDS"))
    #: signing key rotation (domain/keyset.py): the template's key slots (comma-separated
    #: ARNs) and the SSM parameter naming their states ("" = no rotation: SIGNING_KEY_ID)
    signing_key_slots: tuple[str, ...] = field(default=(), metadata=_env("SIGNING_KEY_SLOTS"))
    key_set_parameter: str = field(default="", metadata=_env("KEY_SET_PARAMETER"))
    #: RFC 9449 §8/§9 server nonces (domain/nonces.py): "true" = this function's endpoint
    #: (token endpoint or edge) requires them; the secret (Secrets Manager) and step length
    dpop_nonce_required: str = field(default="false", metadata=_env("DPOP_NONCE_REQUIRED"))
    dpop_nonce_secret_arn: str = field(default="", metadata=_env("DPOP_NONCE_SECRET_ARN"))
    dpop_nonce_step_seconds: int = field(default=300, metadata=_env("DPOP_NONCE_STEP_SECONDS"))
    #: RFC 9728 §5.1: the metadata URL the edge's challenges name ("" = beside the API)
    resource_metadata_url: str = field(default="", metadata=_env("RESOURCE_METADATA_URL"))
    #: quotas (domain/quotas.py); "" = none enforced. Defaults: 0 = unlimited
    quotas_table: str = field(default="", metadata=_env("QUOTAS_TABLE"))
    default_requests_per_minute: int = field(
        default=0, metadata=_env("DEFAULT_REQUESTS_PER_MINUTE")
    )
    default_requests_per_day: int = field(default=0, metadata=_env("DEFAULT_REQUESTS_PER_DAY"))
    default_units_per_day: int = field(default=0, metadata=_env("DEFAULT_UNITS_PER_DAY"))
    #: which quota leases ride in the usage write (domain/quotas.py::FoldPolicy):
    #: never | single | always (template parameter QuotaLeaseFold)
    quota_lease_fold: str = field(default="always", metadata=_env("QUOTA_LEASE_FOLD"))
    #: sharing detection on the stream (domain/sharing.py); "" table = rules off
    sharing_table: str = field(default="", metadata=_env("SHARING_TABLE"))
    #: JSON thresholds per rule (domain.sharing.parse_rules); "" = the defaults
    sharing_rules: str = field(default="", metadata=_env("SHARING_RULES"))
    sharing_topic_arn: str = field(default="", metadata=_env("SHARING_TOPIC_ARN"))
    #: containment of clients without their own mode: audit | step_up | revoke
    containment_default: str = field(default="audit", metadata=_env("CONTAINMENT_DEFAULT"))
    #: the authorizers' cut botocore data (adapters/aws_models.py): "edge" = the layer's
    #: copy beside the package, else a directory; "" = botocore's full models
    botocore_data: str = field(default="", metadata=_env("BOTOCORE_DATA"))

    @classmethod
    def env_names(cls) -> dict[str, str]:
        """field name -> environment variable name."""
        return {f.name: f.metadata["env"] for f in fields(cls)}

    @classmethod
    def from_mapping(cls, env: Mapping[str, str]) -> Settings:
        """Build from environment variables; unknown names are ignored, bad values raise
        ConfigurationError (which the edge turns into fail-closed responses)."""
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(f.metadata["env"])
            if raw is None or raw == "":
                continue
            if f.type in ("int", int):
                try:
                    values[f.name] = int(raw)
                except ValueError as exc:
                    raise ConfigurationError(f"{f.metadata['env']} must be an integer") from exc
            elif f.name == "route_scopes":
                values[f.name] = _route_scopes(raw)
            elif f.name == "signing_key_slots" or f.name == "audiences":
                values[f.name] = tuple(a.strip() for a in raw.split(",") if a.strip())
            elif f.name == "issuer":
                values[f.name] = raw.strip().rstrip("/")
            else:
                values[f.name] = raw.strip()
        settings = cls(**values)  # type: ignore[arg-type]
        settings.validate()
        return settings

    def validate(self) -> None:
        if not 1 <= self.token_lifetime <= MAX_LIFETIME:
            raise ConfigurationError(f"TOKEN_LIFETIME_SECONDS must be within 1..{MAX_LIFETIME}")
        if not 1 <= self.proof_max_age <= 300:
            raise ConfigurationError("PROOF_MAX_AGE_SECONDS must be within 1..300")
        if not 60 <= self.refresh_idle_seconds <= self.refresh_absolute_seconds <= 30 * 86_400:
            raise ConfigurationError(
                "REFRESH_TOKEN_IDLE_SECONDS must be within 60..REFRESH_TOKEN_ABSOLUTE_SECONDS"
                " (at most 30 days)"
            )
        if not 1 <= self.max_devices_per_person <= 50:
            raise ConfigurationError("MAX_DEVICES_PER_PERSON must be within 1..50")
        if not 0 <= self.clock_skew <= 60:
            raise ConfigurationError("CLOCK_SKEW_SECONDS must be within 0..60")
        if self.dpop_nonce_required not in ("true", "false"):
            raise ConfigurationError("DPOP_NONCE_REQUIRED must be true or false")
        if not 10 <= self.dpop_nonce_step_seconds <= 3600:
            raise ConfigurationError("DPOP_NONCE_STEP_SECONDS must be within 10..3600")
        for name in ("default_requests_per_minute", "default_requests_per_day"):
            if getattr(self, name) < 0:
                raise ConfigurationError(f"{self.env_names()[name]} must not be negative")
        if self.default_units_per_day < 0:
            raise ConfigurationError("DEFAULT_UNITS_PER_DAY must not be negative")
        if self.quota_lease_fold not in {p.value for p in FoldPolicy}:
            raise ConfigurationError("QUOTA_LEASE_FOLD must be never, single or always")
        _validate_sharing(self)

    def require(self, *names: str) -> None:
        """Raise ConfigurationError naming the first empty required setting."""
        env = self.env_names()
        for name in names:
            if not getattr(self, name):
                raise ConfigurationError(f"{env[name]} is not configured")


def _route_scopes(raw: str) -> tuple[tuple[str, str], ...]:
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ConfigurationError("ROUTE_SCOPES must be a JSON object") from exc
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ConfigurationError("ROUTE_SCOPES must map 'METHOD /path' to a scope string")
    return tuple(sorted(value.items()))


def _validate_sharing(settings: Settings) -> None:
    if not settings.sharing_rules and settings.containment_default == "audit":
        return  # the defaults: no import on the authorizer's cold start
    from tokenbroker.domain.sharing import parse_mode, parse_rules

    parse_rules(settings.sharing_rules)
    try:
        parse_mode(settings.containment_default)
    except ConfigurationError as exc:
        raise ConfigurationError(f"CONTAINMENT_DEFAULT: {exc}") from exc
