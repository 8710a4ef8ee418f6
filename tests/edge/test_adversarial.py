"""Adversarial table for the REST API REQUEST authorizer (functions/authorizer/app.py).

Every row builds one API Gateway event (some first spend a request) and runs it through
the real handler with the real composition root; only the key source (a local P-256 key
standing in for KMS) and the usage ledger (an in-memory fake with the DynamoDB adapter's
conditions) are test doubles. Each row states the outcome (401 = the handler raised
``Unauthorized``; 403 = a Deny policy; allow) and exactly which usage records exist
afterwards: garbage writes nothing, an authentic token that is then refused writes one
DENY record naming the reason.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from edge import _support as s
from support.dpop import DeviceKey, b64url, b64url_json, der_signature, malleate_ecdsa, raw_jws
from tokenbroker import bootstrap
from tokenbroker.domain.clock import FixedClock
from tokenbroker.domain.keycache import KeyCache

NOT_RECORDED: tuple[tuple[str, str], ...] = ()
DENY_PROOF = (("deny", "invalid_dpop_proof"),)


@dataclass
class Kit:
    clock: FixedClock
    issuer: s.Issuer
    device: DeviceKey
    ledger: s.FakeUsageLedger
    app: Any
    context: s.LambdaContext
    #: every error AuthorizationService.authorize_then raised, in order (observed only)
    errors: list[BaseException] = field(default_factory=list)

    @property
    def now(self) -> int:
        return int(self.clock())

    def token(self, **kw: Any) -> str:
        return self.issuer.token(self.now, self.device.jkt, **kw)

    def proof(self, token: str | None, **kw: Any) -> str:
        kw.setdefault("iat", self.now)
        return s.proof(kw.pop("device", self.device), token, **kw)

    def pair(self) -> tuple[str, str]:
        token = self.token()
        return token, self.proof(token)

    def event(self, token: str, proof: str, scheme: str = "DPoP", **kw: Any) -> dict[str, Any]:
        return s.rest_event(s.dpop_headers(token, proof, scheme), **kw)

    def call(self, event: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
        """("401", None) | ("403", policy) | ("allow", policy); anything else fails."""
        return s.call_rest_authorizer(self.app, event, self.context)


@pytest.fixture
def kit(monkeypatch: pytest.MonkeyPatch, fixed_clock: FixedClock) -> Kit:
    issuer = s.Issuer()
    ledger = s.FakeUsageLedger()
    container = s.build_container(
        s.settings(), clock=fixed_clock, key_cache=issuer.key_cache(fixed_clock), usage=ledger
    )
    monkeypatch.setattr(bootstrap, "default", lambda: container)
    kit = Kit(
        clock=fixed_clock,
        issuer=issuer,
        device=DeviceKey.generate("ES256"),
        ledger=ledger,
        app=s.load_authorizer(),
        context=s.LambdaContext(),
    )
    service = container.authorization
    authorize = service.authorize_then

    def observed(*args: Any, **kwargs: Any) -> Any:
        try:
            return authorize(*args, **kwargs)
        except BaseException as exc:
            kit.errors.append(exc)
            raise

    monkeypatch.setattr(service, "authorize_then", observed)
    return kit


# ---------------------------------------------------------------- builders


def _with_token(make_token: Callable[[Kit], str]) -> Callable[[Kit], dict[str, Any]]:
    """An event carrying a (bad) token and a proof that is otherwise valid for it."""

    def build(kit: Kit) -> dict[str, Any]:
        token = make_token(kit)
        return kit.event(token, kit.proof(token))

    return build


def _with_proof(make_proof: Callable[[Kit, str], str]) -> Callable[[Kit], dict[str, Any]]:
    """An event carrying a valid token and a (bad) proof."""

    def build(kit: Kit) -> dict[str, Any]:
        token = kit.token()
        return kit.event(token, make_proof(kit, token))

    return build


def _token_header(**overrides: Any) -> Callable[[Kit], str]:
    return lambda kit: kit.token(header=kit.issuer.header(**overrides))


def _token_claims(**overrides: Any) -> Callable[[Kit], str]:
    return lambda kit: kit.token(**overrides)


def _unsigned_token(alg: str) -> Callable[[Kit], str]:
    return lambda kit: kit.token(header=kit.issuer.header(alg=alg), signature=b"")


def _unsigned_proof(alg: str) -> Callable[[Kit, str], str]:
    def make(kit: Kit, token: str) -> str:
        header = {"typ": "dpop+jwt", "alg": alg, "jwk": kit.device.public_jwk}
        claims = {
            "jti": "unsigned-proof",
            "htm": "GET",
            "htu": s.url_for(s.WHOAMI),
            "iat": kit.now,
            "ath": s.ath_for(token),
        }
        return raw_jws(header, claims, signature=b"")

    return make


def _hmac_token(secret_of: Callable[[Kit], bytes]) -> Callable[[Kit], str]:
    """HS256 "signed" with the public key as the HMAC secret (the alg-confusion attack)."""

    def make(kit: Kit) -> str:
        signing_input = (
            f"{b64url_json(kit.issuer.header(alg='HS256'))}."
            f"{b64url_json(kit.issuer.claims(kit.now, kit.device.jkt))}"
        )
        mac = hmac.new(secret_of(kit), signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{b64url(mac)}"

    return make


def _pem(kit: Kit) -> bytes:
    return kit.issuer.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _jwk_json(kit: Kit) -> bytes:
    return json.dumps(kit.issuer.key.public_jwk).encode()


def _signed_by_attacker(**header: Any) -> Callable[[Kit], str]:
    def make(kit: Kit) -> str:
        attacker = DeviceKey.generate("ES256")
        resolved = {k: (v(attacker) if callable(v) else v) for k, v in header.items()}
        return kit.token(header=kit.issuer.header(**resolved), sign_with=attacker)

    return make


def _resigned(transform: Callable[[bytes], bytes]) -> Callable[[Kit], str]:
    """A token whose genuine signature is replaced by ``transform(signature)``."""

    def make(kit: Kit) -> str:
        header, claims, _ = kit.token().split(".")
        genuine = kit.issuer.key.sign(f"{header}.{claims}".encode())
        return f"{header}.{claims}.{b64url(transform(genuine))}"

    return make


def _token_with_duplicate_header(kit: Kit) -> str:
    # a last-member-wins parser sees a valid ES256 header
    header = f'{{"alg":"none","typ":"at+jwt","kid":"{kit.issuer.kid}","alg":"ES256"}}'
    return kit.token(header=header)


def _token_with_duplicate_claim(kit: Kit) -> str:
    valid = json.dumps(kit.issuer.claims(kit.now, kit.device.jkt), separators=(",", ":"))
    return kit.token(claims='{"aud":"urn:evil",' + valid[1:])


def _proof_with_duplicate_claim(kit: Kit, token: str) -> str:
    claims = {
        "jti": "dup-claims",
        "htm": "GET",
        "htu": s.url_for(s.WHOAMI),
        "iat": kit.now,
        "ath": s.ath_for(token),
    }
    text = '{"htm":"POST",' + json.dumps(claims, separators=(",", ":"))[1:]
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": kit.device.public_jwk}
    return raw_jws(header, text, sign_with=kit.device)


def _padded_signature_token(kit: Kit) -> str:
    token = kit.token()
    padded = token + "=" * (-len(token.rsplit(".", 1)[1]) % 4)
    assert padded != token  # a 64-byte signature is 86 characters: "==" is added
    return padded


def _standard_alphabet_token(kit: Kit) -> str:
    for _ in range(100):  # ECDSA is randomised: some signature has a "-" or "_"
        token = kit.token()
        if "-" in token or "_" in token:
            return token.replace("-", "+").replace("_", "/")
    raise AssertionError("no token with a base64url-only character in 100 tries")


def _invalid_utf8_token(kit: Kit) -> str:
    claims = json.dumps(kit.issuer.claims(kit.now, kit.device.jkt), separators=(",", ":"))
    broken = claims.encode().replace(b'"sub":"', b'"sub":"\xff\xfe', 1)
    assert b"\xff" in broken
    return kit.token(claims=broken)


def _header_list(
    make: Callable[[Kit, str, str], list[tuple[str, str]]],
) -> Callable[[Kit], dict[str, Any]]:
    def build(kit: Kit) -> dict[str, Any]:
        token, proof = kit.pair()
        return s.rest_event(make(kit, token, proof))

    return build


def _two_dpop_headers(kit: Kit, token: str, proof: str) -> list[tuple[str, str]]:
    return [*s.dpop_headers(token, proof), ("DPoP", kit.proof(token))]


def _two_authorizations(kit: Kit, token: str, proof: str) -> list[tuple[str, str]]:
    return [("Authorization", f"DPoP {kit.token()}"), *s.dpop_headers(token, proof)]


def _replay(malleate: bool) -> Callable[[Kit], dict[str, Any]]:
    def build(kit: Kit) -> dict[str, Any]:
        token, proof = kit.pair()
        assert kit.call(kit.event(token, proof))[0] == "allow"
        return kit.event(token, malleate_ecdsa(proof) if malleate else proof)

    return build


def _invoke(scope: str) -> Callable[[Kit], dict[str, Any]]:
    def build(kit: Kit) -> dict[str, Any]:
        path = s.INVOKE.replace("{model}", s.MODEL)
        token = kit.token(scope=scope)
        proof = kit.proof(token, htm="POST", htu=s.url_for(path))
        return kit.event(
            token,
            proof,
            method="POST",
            resource=s.INVOKE,
            path=path,
            path_parameters={"model": s.MODEL},
        )

    return build


def _unconfigured_route(kit: Kit) -> dict[str, Any]:
    token = kit.token()
    return kit.event(token, kit.proof(token, htu=s.url_for("/v1/admin")), resource="/v1/admin")


# ---------------------------------------------------------------- the table


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Kit], dict[str, Any]]
    outcome: str  # "401" | "403"
    records: tuple[tuple[str, str], ...] = NOT_RECORDED
    error: str = ""  # the OAuth error code of the denial ("" = derived below)

    @property
    def expected_error(self) -> str:
        if self.error:
            return self.error
        if self.outcome == "403":
            return "insufficient_scope"
        if self.records and self.records[-1][0] == "deny":
            return "invalid_dpop_proof"  # the token was authentic: the proof failed
        return "invalid_token"


def _case(id_: str, build: Callable[[Kit], dict[str, Any]], outcome: str = "401", **kw: Any):
    return pytest.param(Case(id_, build, outcome, **kw), id=id_)


DENIED = [
    # -- alg: none and algorithm confusion
    *[
        _case(f"token-alg-{alg}", _with_token(_unsigned_token(alg)))
        for alg in ("none", "None", "NONE", "nOnE")
    ],
    *[
        _case(f"proof-alg-{alg}", _with_proof(_unsigned_proof(alg)), records=DENY_PROOF)
        for alg in ("none", "None", "NONE", "nOnE")
    ],
    _case("token-hs256-keyed-with-public-pem", _with_token(_hmac_token(_pem))),
    _case("token-hs256-keyed-with-public-jwk-json", _with_token(_hmac_token(_jwk_json))),
    # -- keys the attacker controls
    _case("token-signed-by-another-key-with-the-real-kid", _with_token(_signed_by_attacker())),
    _case("token-embedded-jwk", _with_token(_signed_by_attacker(jwk=lambda a: a.public_jwk))),
    _case("token-jku", _with_token(_signed_by_attacker(jku="https://evil.example/jwks.json"))),
    _case("token-x5u", _with_token(_signed_by_attacker(x5u="https://evil.example/cert.pem"))),
    _case("token-x5c", _with_token(_signed_by_attacker(x5c=["MIIBszCCAVmgAwIBAgIUevil"]))),
    _case("kid-path-traversal", _with_token(_token_header(kid="../../etc/passwd"))),
    _case("kid-sql-injection", _with_token(_token_header(kid="' OR 1=1 --"))),
    _case("kid-10kb", _with_token(_token_header(kid="A" * 10_240))),
    _case("kid-of-another-thumbprint", _with_token(_signed_by_attacker(kid=lambda a: a.jkt))),
    # -- signature encodings
    _case("signature-all-zero-64-bytes", _with_token(_resigned(lambda _: bytes(64)))),
    _case("signature-der-instead-of-raw", _with_token(_resigned(der_signature))),
    _case("signature-truncated", _with_token(_resigned(lambda sig: sig[:32]))),
    _case("token-crit-header", _with_token(_token_header(crit=["exp"], exp=1))),
    _case("token-b64-false", _with_token(_token_header(b64=False))),
    # -- confused types
    _case(
        "proof-used-as-token",
        lambda kit: kit.event(kit.proof(None), kit.proof(None)),
    ),
    _case(
        "token-used-as-proof",
        lambda kit: (lambda t: kit.event(t, kit.token()))(kit.token()),
        records=DENY_PROOF,
    ),
    _case("token-typ-missing", _with_token(_token_header(typ=s.DROP))),
    _case("token-typ-jwt", _with_token(_token_header(typ="JWT"))),
    _case("token-typ-dpop+jwt", _with_token(_token_header(typ="dpop+jwt"))),
    _case(
        "proof-typ-missing",
        _with_proof(lambda kit, t: kit.proof(t, drop_header=("typ",))),
        records=DENY_PROOF,
    ),
    _case(
        "proof-typ-at+jwt",
        _with_proof(lambda kit, t: kit.proof(t, header={"typ": "at+jwt"})),
        records=DENY_PROOF,
    ),
    _case(
        "proof-typ-jwt",
        _with_proof(lambda kit, t: kit.proof(t, header={"typ": "JWT"})),
        records=DENY_PROOF,
    ),
    # -- time
    _case(
        "token-expired",
        _with_token(lambda kit: kit.token(iat=kit.now - 350, exp=kit.now - 60)),
    ),
    _case("token-nbf-in-the-future", _with_token(lambda kit: kit.token(nbf=kit.now + 60))),
    _case(
        "token-iat-in-the-future",
        _with_token(lambda kit: kit.token(iat=kit.now + 60, exp=kit.now + 350)),
    ),
    _case(
        "proof-iat-far-future",
        _with_proof(lambda kit, t: kit.proof(t, iat=kit.now + 3600)),
        records=DENY_PROOF,
    ),
    _case(
        "proof-iat-too-old",
        _with_proof(lambda kit, t: kit.proof(t, iat=kit.now - 120)),
        records=DENY_PROOF,
    ),
    _case("exp-as-string", _with_token(lambda kit: kit.token(exp=str(kit.now + 290)))),
    _case("exp-as-float", _with_token(lambda kit: kit.token(exp=kit.now + 290.0))),
    _case("exp-huge-2**64", _with_token(_token_claims(exp=2**64))),
    _case("exp-as-bool", _with_token(_token_claims(exp=True))),
    _case("wrong-aud", _with_token(_token_claims(aud="urn:tokenbroker:other-api"))),
    _case("wrong-iss", _with_token(_token_claims(iss="https://evil.example/prod"))),
    # -- parsing
    _case("duplicate-key-token-header", _with_token(_token_with_duplicate_header)),
    _case("duplicate-key-token-payload", _with_token(_token_with_duplicate_claim)),
    _case(
        "duplicate-key-proof-payload", _with_proof(_proof_with_duplicate_claim), records=DENY_PROOF
    ),
    _case("padded-base64url-segment", _with_token(_padded_signature_token)),
    _case("standard-alphabet-base64", _with_token(_standard_alphabet_token)),
    _case("oversized-token", _with_token(_token_claims(pad="A" * 5000))),
    _case(
        # the DPoP header's size is checked before the token is verified: nothing recorded
        "oversized-proof",
        _with_proof(lambda kit, t: kit.proof(t, claims={"pad": "A" * 5000})),
        error="invalid_dpop_proof",
    ),
    _case("invalid-utf8-in-segment", _with_token(_invalid_utf8_token)),
    # -- proof claims
    *[
        _case(
            f"proof-claim-{claim}-missing",
            _with_proof(lambda kit, t, c=claim: kit.proof(t, drop_claims=(c,))),
            records=DENY_PROOF,
        )
        for claim in ("jti", "htm", "htu", "iat")
    ],
    _case("proof-ath-missing", _with_proof(lambda kit, t: kit.proof(None)), records=DENY_PROOF),
    _case(
        "htm-post-for-get",
        _with_proof(lambda kit, t: kit.proof(t, htm="POST")),
        records=DENY_PROOF,
    ),
    _case(
        "htm-lowercase-get",
        _with_proof(lambda kit, t: kit.proof(t, htm="get")),
        records=DENY_PROOF,
    ),
    *[
        _case(
            f"htu-{name}",
            _with_proof(lambda kit, t, u=url: kit.proof(t, htu=u)),
            records=DENY_PROOF,
        )
        for name, url in {
            "other-path": s.url_for("/v1/models/x/invoke"),
            "other-host": f"https://evil.example/{s.STAGE}{s.WHOAMI}",
            "http-instead-of-https": s.url_for(s.WHOAMI, scheme="http"),
            "token-endpoint": s.url_for("/oauth2/token"),
            "other-stage": s.url_for(s.WHOAMI, stage="dev"),
            "with-userinfo": f"https://alice@{s.HOST}/{s.STAGE}{s.WHOAMI}",
            "encoded-slash": s.url_for("/v1%2Fwhoami"),
            "dot-segments-to-the-token-endpoint": s.url_for("/v1/whoami/../../oauth2/token"),
        }.items()
    ],
    _case(
        "wrong-ath",
        _with_proof(lambda kit, t: kit.proof(kit.token())),
        records=DENY_PROOF,
    ),
    _case(
        "proof-from-another-key",
        _with_proof(lambda kit, t: kit.proof(t, device=DeviceKey.generate("ES256"))),
        records=(("deny", "proof_key_mismatch"),),
    ),
    _case(
        "proof-alg-es384-with-a-p256-key",
        _with_proof(lambda kit, t: kit.proof(t, header={"alg": "ES384"})),
        records=DENY_PROOF,
    ),
    _case(
        "proof-alg-hs256",
        _with_proof(lambda kit, t: kit.proof(t, header={"alg": "HS256"})),
        records=DENY_PROOF,
    ),
    _case(
        "proof-alg-rs256",
        _with_proof(lambda kit, t: kit.proof(t, header={"alg": "RS256"})),
        records=DENY_PROOF,
    ),
    _case(
        "proof-signature-all-ff",
        _with_proof(lambda kit, t: ".".join([*kit.proof(t).split(".")[:2], b64url(b"\xff" * 64)])),
        records=DENY_PROOF,
    ),
    _case(
        "proof-jwk-with-private-d",
        _with_proof(lambda kit, t: kit.proof(t, header={"jwk": kit.device.private_jwk})),
        records=DENY_PROOF,
    ),
    # -- headers
    _case("two-dpop-headers", _header_list(_two_dpop_headers), error="invalid_dpop_proof"),
    _case("two-authorization-headers", _header_list(_two_authorizations)),
    _case("bearer-downgrade", lambda kit: kit.event(*kit.pair(), scheme="Bearer")),
    _case("bearer-lowercase", lambda kit: kit.event(*kit.pair(), scheme="bearer")),
    _case("no-credentials", lambda kit: s.rest_event([])),
    _case(
        "dpop-header-missing",
        lambda kit: s.rest_event([("Authorization", f"DPoP {kit.token()}")]),
        error="invalid_dpop_proof",
    ),
    _case(
        "authorization-header-missing",
        lambda kit: s.rest_event([("DPoP", kit.proof(kit.token()))]),
    ),
    _case("headers-null", lambda kit: s.rest_event(None)),
    _case(
        "multivalueheaders-null-and-no-credentials",
        lambda kit: s.rest_event([], multi_headers=None),
    ),
    # -- replay
    _case(
        "replay-same-proof",
        _replay(malleate=False),
        records=(("allow", "ok"), ("deny", "proof_replayed")),
    ),
    _case(
        "replay-malleated-signature",
        _replay(malleate=True),
        records=(("allow", "ok"), ("deny", "proof_replayed")),
    ),
    # -- scope
    _case(
        "invoke-with-wrong-scope",
        _invoke("model:other-model:invoke profile"),
        "403",
        records=(("deny", "insufficient_scope"),),
    ),
    _case(
        "route-not-configured",
        _unconfigured_route,
        "403",
        records=(("deny", "route_not_configured"),),
    ),
]


@pytest.mark.parametrize("case", DENIED)
def test_every_hostile_request_is_denied_and_leaves_only_the_records_it_should(
    kit: Kit, case: Case
) -> None:
    event = case.build(kit)

    outcome, response = kit.call(event)

    assert outcome == case.outcome
    assert [getattr(e, "error", repr(e)) for e in kit.errors] == [case.expected_error]
    if response is not None:  # 403: a Deny policy, never a context for the function
        # a Deny carries its challenge only (for the ACCESS_DENIED gateway response),
        # never anything of a grant
        assert set(response.get("context") or {}) <= {"challenge", "dpop_nonce"}
    assert kit.ledger.decisions() == list(case.records)


# ---------------------------------------------------------------- positive controls


def _htu(url: str) -> Callable[[Kit], dict[str, Any]]:
    return _with_proof(lambda kit, t: kit.proof(t, htu=url))


ALLOWED = [
    pytest.param(
        _htu(f"HTTPS://{s.HOST.upper()}/{s.STAGE}{s.WHOAMI}"), id="htu-uppercase-scheme-and-host"
    ),
    pytest.param(_htu(f"https://{s.HOST}:443/{s.STAGE}{s.WHOAMI}"), id="htu-explicit-port-443"),
    pytest.param(_htu(s.url_for(s.WHOAMI) + "?model=x&n=1"), id="htu-with-query-string"),
    pytest.param(_htu(s.url_for(s.WHOAMI) + "#fragment"), id="htu-with-fragment"),
    pytest.param(_htu(s.url_for("/v1/%77ho%61mi")), id="htu-percent-encoded-unreserved"),
    pytest.param(_htu(s.url_for("/v1/./x/../whoami")), id="htu-dot-segments"),
    pytest.param(lambda kit: kit.event(*kit.pair(), scheme="dpop"), id="scheme-dpop-lowercase"),
    pytest.param(lambda kit: kit.event(*kit.pair(), scheme="DPOP"), id="scheme-dpop-uppercase"),
    pytest.param(_invoke(f"profile {s.INVOKE_SCOPE}"), id="invoke-with-the-right-scope"),
]


@pytest.mark.parametrize("build", ALLOWED)
def test_legitimate_variations_are_allowed_for_exactly_the_method_arn(
    kit: Kit, build: Callable[[Kit], dict[str, Any]]
) -> None:
    event = build(kit)

    outcome, response = kit.call(event)

    assert outcome == "allow"
    assert response is not None
    statement = response["policyDocument"]["Statement"][0]
    assert statement == {
        "Action": "execute-api:Invoke",
        "Effect": "Allow",
        "Resource": [event["methodArn"]],
    }
    context = response["context"]
    assert s.context_is_flat_strings(context)
    assert context["principal"] == s.PRINCIPAL == response["principalId"]
    assert context["client_id"] == s.CLIENT_ID
    assert context["jkt"] == kit.device.jkt
    assert kit.ledger.decisions() == [("allow", "ok")]
    (record,) = kit.ledger.records.values()
    assert context["usage_id"] == record.record_id


@pytest.mark.parametrize("alg", ["ES256", "ES384", "EdDSA"])
def test_proofs_signed_with_every_supported_algorithm_are_allowed(kit: Kit, alg: str) -> None:
    device = DeviceKey.generate(alg)
    token = kit.token(cnf={"jkt": device.jkt})

    outcome, response = kit.call(kit.event(token, kit.proof(token, device=device)))

    assert outcome == "allow"
    assert response is not None
    assert response["context"]["jkt"] == device.jkt


def test_the_right_scope_on_invoke_puts_principal_client_key_and_scope_in_the_context(
    kit: Kit,
) -> None:
    event = _invoke(f"profile {s.INVOKE_SCOPE}")(kit)

    _, response = kit.call(event)

    assert response is not None
    context = response["context"]
    assert {k: context[k] for k in ("principal", "client_id", "jkt", "scope")} == {
        "principal": s.PRINCIPAL,
        "client_id": s.CLIENT_ID,
        "jkt": kit.device.jkt,
        "scope": f"profile {s.INVOKE_SCOPE}",
    }
    assert response["policyDocument"]["Statement"][0]["Resource"] == [
        s.method_arn("POST", f"/v1/models/{s.MODEL}/invoke")
    ]


def test_the_table_has_at_least_forty_hostile_cases() -> None:
    assert len(DENIED) >= 40
    assert len({p.id for p in DENIED}) == len(DENIED)


# ---------------------------------------------------------------- lone surrogates
# A lone surrogate ("\\ud800") is valid JSON but not encodable text: anything that later
# hashes the claim (ath comparison, replay key) would raise outside the OAuth error tree,
# turning a 401 into a 500 with no record. Rejected since by
# jose.strict_json_object: proofs carrying one are malformed.


def _proof_with_raw_claim(kit: Kit, token: str, name: str, raw_json_value: str) -> str:
    """A proof, signed by the bound device key, whose claim ``name`` is the JSON text
    ``raw_json_value`` (for values json.dumps will not write, e.g. a lone surrogate)."""
    claims = {
        "jti": "surrogate-proof",
        "htm": "GET",
        "htu": s.url_for(s.WHOAMI),
        "iat": kit.now,
        "ath": s.ath_for(token),
    }
    claims.pop(name)
    text = f'{{"{name}":{raw_json_value},' + json.dumps(claims, separators=(",", ":"))[1:]
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": kit.device.public_jwk}
    return raw_jws(header, text, sign_with=kit.device)


def test_a_proof_whose_ath_is_a_lone_surrogate_is_a_recorded_401(kit: Kit) -> None:
    token = kit.token()
    event = kit.event(token, _proof_with_raw_claim(kit, token, "ath", '"\\ud800"'))

    outcome, _ = kit.call(event)

    assert outcome == "401"
    assert kit.ledger.decisions() == list(DENY_PROOF)


def test_a_proof_whose_jti_is_a_lone_surrogate_is_a_recorded_401(kit: Kit) -> None:
    token = kit.token()
    event = kit.event(token, _proof_with_raw_claim(kit, token, "jti", '"\\ud800"'))

    outcome, _ = kit.call(event)

    assert outcome == "401"
    assert kit.ledger.decisions() == list(DENY_PROOF)


# ---------------------------------------------------------------- key cache penalty box


def test_a_flood_of_unknown_kids_fetches_the_keys_at_most_once_per_cool_down(
    monkeypatch: pytest.MonkeyPatch, fixed_clock: FixedClock
) -> None:
    issuer, device = s.Issuer(), DeviceKey.generate("ES256")
    fetches = 0

    def fetch() -> dict[str, Any]:
        nonlocal fetches
        fetches += 1
        return {issuer.kid: issuer.public_key}

    container = s.build_container(
        s.settings(),
        clock=fixed_clock,
        key_cache=KeyCache(fetch, clock=fixed_clock, cooldown=60),
        usage=s.FakeUsageLedger(),
    )
    monkeypatch.setattr(bootstrap, "default", lambda: container)
    app, context = s.load_authorizer(), s.LambdaContext()
    now = int(fixed_clock())

    def flood(n: int) -> None:
        for _ in range(n):
            stranger = DeviceKey.generate("ES256")  # a well-formed kid no one knows
            token = issuer.token(
                now, device.jkt, header=issuer.header(kid=stranger.jkt), sign_with=stranger
            )
            event = s.rest_event(s.dpop_headers(token, s.proof(device, token, iat=now)))
            assert s.call_rest_authorizer(app, event, context)[0] == "401"

    flood(25)
    assert fetches == 1

    fixed_clock.advance(30)
    now = int(fixed_clock())
    flood(25)
    assert fetches == 1

    fixed_clock.advance(31)
    now = int(fixed_clock())
    flood(25)
    assert fetches == 2

    token = issuer.token(now, device.jkt)  # the real kid is still served from memory
    event = s.rest_event(s.dpop_headers(token, s.proof(device, token, iat=now)))
    assert s.call_rest_authorizer(app, event, context)[0] == "allow"
    assert fetches == 2
