"""Sharing detection: the pure rules (no AWS, no clock), evaluated per stream batch.

A device acting as a relay for outsiders still presents valid tokens and proofs; what
gives it away is *where* and *how much* it is used. Four rules, each with thresholds
declared in configuration (:func:`parse_rules`, the ``SHARING_RULES`` JSON parameter):

- ``device_networks``: one device seen from more than ``max_networks`` distinct
  networks (IPv4 /24, IPv6 /48) within a tumbling window of ``window_seconds``.
- ``distant_networks``: one device seen from more than ``max_regions`` distinct
  *distant* networks within ``window_seconds``. Offline there is no GeoIP database, so
  "distant" is a heuristic: a different IPv4 /16 or a different IPv6 /32 (typically a
  different provider or site). A laptop that moves from office Wi-Fi to a phone hotspot
  trips it too, so the default allows one region per window (two flag) and deployments
  that see roaming raise ``max_regions``.
- ``principal_burst``: the principal's requests in the current UTC hour exceed
  ``factor`` times its own baseline (mean requests per hour over the previous
  ``baseline_hours``, from the stream's own per-principal hourly counts: services/sharing.py)
  and at least ``min_requests``.
- ``concurrent_devices``: one principal using more than ``max_devices`` distinct
  devices within ``window_seconds``.

Only **allowed** requests and **issued** tokens count. A denied request names a device
too, but anyone holding a copied token (without the device key) can produce denials from
anywhere: counting them would let an attacker get a victim's device revoked.

The per-window state (a set of networks per device, of devices per principal) is folded
in memory per batch (:func:`fold`) and written once per (rule, subject, window) per
batch; sets make the write idempotent on a retried batch (a union adds nothing twice).
A finding's id is a hash of (rule, subject, window start): the alert store writes it at
most once, however often the stream delivers the batch.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from tokenbroker.domain.errors import ConfigurationError
from tokenbroker.domain.models import Decision, EventType, UsageRecord
from tokenbroker.domain.units import HOUR_MS


class Rule(StrEnum):
    DEVICE_NETWORKS = "device_networks"
    DISTANT_NETWORKS = "distant_networks"
    PRINCIPAL_BURST = "principal_burst"
    CONCURRENT_DEVICES = "concurrent_devices"


class Mode(StrEnum):
    """What a client's containment does with a device a rule flagged."""

    AUDIT = "audit"  # alert only
    STEP_UP = "step_up"  # fresh identity check (token exchange or re-enrollment) first
    REVOKE = "revoke"  # the device is revoked


#: rules whose finding names one device (containment applies to it); the others are
#: about a principal and alert only
DEVICE_RULES = frozenset({Rule.DEVICE_NETWORKS, Rule.DISTANT_NETWORKS})

#: members kept per window set; beyond it the window is flagged anyway (bounded items)
MAX_SET = 200
#: evidence values an alert carries (a summary, not the whole set)
MAX_EVIDENCE = 10


@dataclass(frozen=True)
class RuleConfig:
    enabled: bool = True
    window_seconds: int = 60
    #: device_networks: max_networks; distant_networks: max_regions;
    #: concurrent_devices: max_devices; principal_burst: factor
    limit: int = 10
    #: principal_burst only
    min_requests: int = 500
    baseline_hours: int = 24


DEFAULT_RULES: Mapping[Rule, RuleConfig] = {
    Rule.DEVICE_NETWORKS: RuleConfig(window_seconds=60, limit=5),
    Rule.DISTANT_NETWORKS: RuleConfig(window_seconds=300, limit=1),
    Rule.PRINCIPAL_BURST: RuleConfig(window_seconds=3600, limit=10),
    Rule.CONCURRENT_DEVICES: RuleConfig(window_seconds=300, limit=3),
}

_LIMIT_NAMES = {
    Rule.DEVICE_NETWORKS: "max_networks",
    Rule.DISTANT_NETWORKS: "max_regions",
    Rule.PRINCIPAL_BURST: "factor",
    Rule.CONCURRENT_DEVICES: "max_devices",
}


@dataclass(frozen=True)
class Rules:
    configs: Mapping[Rule, RuleConfig] = field(default_factory=lambda: dict(DEFAULT_RULES))

    def get(self, rule: Rule) -> RuleConfig:
        return self.configs.get(rule, RuleConfig(enabled=False))

    def enabled(self, rule: Rule) -> bool:
        return self.get(rule).enabled


def parse_rules(raw: str) -> Rules:
    """The ``SHARING_RULES`` JSON: ``{"device_networks": {"window_seconds": 60,
    "max_networks": 5}, "principal_burst": {"enabled": false}, ...}``. Rules and keys not
    named keep their defaults; unknown rules or keys and out-of-range values raise
    ConfigurationError (the stream function then fails the batch: fail closed)."""
    if not raw.strip():
        return Rules()
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ConfigurationError("SHARING_RULES must be a JSON object") from exc
    if not isinstance(value, dict):
        raise ConfigurationError("SHARING_RULES must be a JSON object")
    configs = dict(DEFAULT_RULES)
    for name, options in value.items():
        try:
            rule = Rule(name)
        except ValueError as exc:
            raise ConfigurationError(f"SHARING_RULES: unknown rule {name!r}") from exc
        if not isinstance(options, dict):
            raise ConfigurationError(f"SHARING_RULES.{name} must be an object")
        configs[rule] = _rule_config(rule, configs[rule], options)
    return Rules(configs)


def _rule_config(rule: Rule, base: RuleConfig, options: Mapping[str, object]) -> RuleConfig:
    allowed = {"enabled", "window_seconds", _LIMIT_NAMES[rule]}
    if rule is Rule.PRINCIPAL_BURST:
        allowed |= {"min_requests", "baseline_hours"}
    changes: dict[str, object] = {}
    for key, raw in options.items():
        if key not in allowed:
            raise ConfigurationError(f"SHARING_RULES.{rule}: unknown key {key!r}")
        if key == "enabled":
            if not isinstance(raw, bool):
                raise ConfigurationError(f"SHARING_RULES.{rule}.enabled must be true or false")
            changes["enabled"] = raw
            continue
        if type(raw) is not int or raw < 1:
            raise ConfigurationError(f"SHARING_RULES.{rule}.{key} must be a positive integer")
        changes["limit" if key == _LIMIT_NAMES[rule] else key] = raw
    config = replace(base, **changes)  # type: ignore[arg-type]
    if not 1 <= config.window_seconds <= 86_400:
        raise ConfigurationError(f"SHARING_RULES.{rule}.window_seconds must be within 1..86400")
    if rule is not Rule.PRINCIPAL_BURST and config.limit >= MAX_SET:
        raise ConfigurationError(f"SHARING_RULES.{rule}: the limit must be below {MAX_SET}")
    if not 1 <= config.baseline_hours <= 168:
        raise ConfigurationError(f"SHARING_RULES.{rule}.baseline_hours must be within 1..168")
    return config


def rules_json(rules: Rules) -> dict[str, dict[str, object]]:
    """The effective configuration, in the SHARING_RULES shape (for docs and tests)."""
    out: dict[str, dict[str, object]] = {}
    for rule, config in rules.configs.items():
        entry: dict[str, object] = {
            "enabled": config.enabled,
            "window_seconds": config.window_seconds,
            _LIMIT_NAMES[rule]: config.limit,
        }
        if rule is Rule.PRINCIPAL_BURST:
            entry |= {"min_requests": config.min_requests, "baseline_hours": config.baseline_hours}
        out[rule.value] = entry
    return out


# --------------------------------------------------------------------- networks


def network_of(source_ip: str) -> str:
    """The /24 (IPv4) or /48 (IPv6) network of an address; "" if it is not one."""
    return _prefix(source_ip, 24, 48)


def region_of(source_ip: str) -> str:
    """The "distant network" heuristic: the /16 (IPv4) or /32 (IPv6); "" if invalid."""
    return _prefix(source_ip, 16, 32)


def _prefix(source_ip: str, v4: int, v6: int) -> str:
    try:
        address = ipaddress.ip_address(source_ip.strip())
    except ValueError:
        return ""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    bits = v4 if address.version == 4 else v6
    return str(ipaddress.ip_network(f"{address}/{bits}", strict=False))


# ------------------------------------------------------------------ the batch fold


@dataclass(frozen=True)
class WindowKey:
    rule: Rule
    subject: str  # the device's jkt, or the principal
    start_ms: int


@dataclass(frozen=True)
class WindowDelta:
    """What one batch adds to one (rule, subject, window): members of its set."""

    key: WindowKey
    window_ms: int
    members: frozenset[str]
    principal: str
    client_id: str
    jkt: str  # "" for a principal's window


@dataclass(frozen=True)
class WindowState:
    """A window's members after the batch's delta was added (the store's union)."""

    delta: WindowDelta
    members: frozenset[str]
    #: the store stopped adding at MAX_SET members: the window counts as over any limit
    overflow: bool = False


def counts(record: UsageRecord) -> bool:
    """Whether the record is a use the rules count (see the module docstring)."""
    if record.decision is not Decision.ALLOW:
        return False
    return record.event in (EventType.REQUEST, EventType.TOKEN_ISSUED)


def window_start(at_ms: int, window_seconds: int) -> int:
    window_ms = window_seconds * 1000
    return at_ms - at_ms % window_ms


def fold(records: Iterable[UsageRecord], rules: Rules) -> list[WindowDelta]:
    """ONE delta per (rule, subject, window) for the batch, in a stable order."""
    found: dict[WindowKey, tuple[set[str], UsageRecord]] = {}

    def add(rule: Rule, subject: str, member: str, record: UsageRecord) -> None:
        if not (subject and member and rules.enabled(rule)):
            return
        key = WindowKey(rule, subject, window_start(record.at_ms, rules.get(rule).window_seconds))
        found.setdefault(key, (set(), record))[0].add(member)

    for record in records:
        if not counts(record):
            continue
        add(Rule.DEVICE_NETWORKS, record.jkt, network_of(record.source_ip), record)
        add(Rule.DISTANT_NETWORKS, record.jkt, region_of(record.source_ip), record)
        add(Rule.CONCURRENT_DEVICES, record.principal or record.client_id, record.jkt, record)
    deltas = []
    for key in sorted(found, key=lambda k: (k.rule.value, k.subject, k.start_ms)):
        members, first = found[key]
        deltas.append(
            WindowDelta(
                key=key,
                window_ms=rules.get(key.rule).window_seconds * 1000,
                members=frozenset(members),
                principal=first.principal or first.client_id,
                client_id=first.client_id,
                jkt=first.jkt if key.rule in DEVICE_RULES else "",
            )
        )
    return deltas


def principals(records: Iterable[UsageRecord]) -> dict[str, tuple[str, int]]:
    """Principal -> (a client of theirs, the latest ``at_ms``) among the counted uses."""
    out: dict[str, tuple[str, int]] = {}
    for r in records:
        if counts(r) and r.event is EventType.REQUEST:
            principal = r.principal or r.client_id
            _, latest = out.get(principal, (r.client_id, 0))
            out[principal] = (r.client_id, max(latest, r.at_ms))
    return dict(sorted(out.items()))


# ----------------------------------------------------------------------- findings


@dataclass(frozen=True)
class Finding:
    rule: Rule
    principal: str
    client_id: str
    jkt: str  # "" when the finding is about a principal (no containment)
    window_start_ms: int
    window_end_ms: int
    observed: int
    limit: int
    evidence: tuple[str, ...]

    @property
    def subject(self) -> str:
        return self.jkt or self.principal

    @property
    def alert_id(self) -> str:
        """Deterministic: the same (rule, subject, window) is the same alert."""
        digest = hashlib.sha256(
            f"{self.rule}|{self.subject}|{self.window_start_ms}".encode()
        ).hexdigest()[:20]
        return f"{alert_day(self.window_start_ms)}-{digest}"

    def summary(self) -> str:
        what = {
            Rule.DEVICE_NETWORKS: "networks",
            Rule.DISTANT_NETWORKS: "distant networks",
            Rule.CONCURRENT_DEVICES: "devices",
            Rule.PRINCIPAL_BURST: "requests this hour",
        }[self.rule]
        seconds = (self.window_end_ms - self.window_start_ms) // 1000
        return f"{self.observed} {what} in {seconds}s (limit {self.limit})"


def alert_day(at_ms: int) -> str:
    """The UTC day (``YYYYMMDD``) that prefixes an alert id (its store partition)."""
    return time.strftime("%Y%m%d", time.gmtime(at_ms // 1000))


def day_of_alert(alert_id: str) -> str:
    """The day an alert id names, or "" if it is not an alert id."""
    day, sep, digest = alert_id.partition("-")
    ok = sep and len(day) == 8 and day.isdigit() and len(digest) == 20
    return day if ok and all(c in "0123456789abcdef" for c in digest) else ""


def evaluate_window(state: WindowState, rules: Rules) -> Finding | None:
    """The finding for a window over its rule's limit, else None."""
    rule = state.delta.key.rule
    limit = rules.get(rule).limit
    observed = len(state.members)
    if observed <= limit and not state.overflow:
        return None
    start = state.delta.key.start_ms
    return Finding(
        rule=rule,
        principal=state.delta.principal,
        client_id=state.delta.client_id,
        jkt=state.delta.jkt,
        window_start_ms=start,
        window_end_ms=start + state.delta.window_ms,
        observed=max(observed, limit + 1) if state.overflow else observed,
        limit=limit,
        evidence=tuple(sorted(state.members)[:MAX_EVIDENCE]),
    )


def evaluate_burst(
    principal: str,
    client_id: str,
    at_ms: int,
    hourly: Sequence[tuple[int, int]],
    rules: Rules,
) -> Finding | None:
    """``hourly``: (hour start ms, requests) of the principal's hours with records up to
    and including the one holding ``at_ms``. Flags the current hour if it exceeds
    ``factor`` times the mean of the previous ``baseline_hours`` (hours without records
    count as zero) and ``min_requests``."""
    config = rules.get(Rule.PRINCIPAL_BURST)
    if not config.enabled:
        return None
    current_start = at_ms - at_ms % HOUR_MS
    baseline_from = current_start - config.baseline_hours * HOUR_MS
    current = sum(n for start, n in hourly if start == current_start)
    before = sum(n for start, n in hourly if baseline_from <= start < current_start)
    baseline = before / config.baseline_hours
    if current < config.min_requests or current <= config.limit * max(baseline, 1.0):
        return None
    return Finding(
        rule=Rule.PRINCIPAL_BURST,
        principal=principal,
        client_id=client_id,
        jkt="",
        window_start_ms=current_start,
        window_end_ms=current_start + HOUR_MS,
        observed=current,
        limit=int(config.limit * max(baseline, 1.0)),
        evidence=(f"baseline {baseline:.1f}/h over {config.baseline_hours}h",),
    )


@dataclass(frozen=True)
class Alert:
    """What the alerts table keeps about a finding (ids and networks only)."""

    alert_id: str
    rule: str
    principal: str
    client_id: str
    jkt: str
    summary: str
    evidence: tuple[str, ...]
    at_ms: int  # when the finding was made (the window's start is in the id's hash)
    window_start_ms: int
    status: str = "open"  # open | acked
    containment: str = Mode.AUDIT.value  # the mode applied: audit | step_up | revoke
    acked_by: str = ""
    acked_at_ms: int = 0


def parse_mode(raw: str) -> Mode:
    try:
        return Mode(raw.strip())
    except ValueError as exc:
        raise ConfigurationError(
            f"containment mode must be one of {', '.join(m.value for m in Mode)}"
        ) from exc
