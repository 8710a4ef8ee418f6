"""template.yaml as a deployment others build on: who can sign, what other stacks import,
the optional authorizers, WAF, the admin policy; plus infra/edge.yaml and the example
of another stack's API (cfn-lint on each)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import ManualArgs, lint_file

from tokenbroker.local.template import Template, load_template
from tokenbroker.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "template.yaml"
EXAMPLE = ROOT / "examples" / "protected-api" / "template.yaml"
EDGE = ROOT / "infra" / "edge.yaml"
ACCOUNT = "123456789012"
SIGNERS = {
    "SigningKey": "TokenFunctionRole",
    "SigningKeyB": "TokenFunctionRole",  # the second slot of signing key rotation
    "DigestKey": "DigestFunctionRole",
}


@pytest.fixture(scope="module")
def template() -> Template:
    return load_template(TEMPLATE)


@pytest.fixture(scope="module")
def doc(template: Template) -> dict[str, Any]:
    document: dict[str, Any] = template.document()
    return document


def _translate(document: dict[str, Any]) -> dict[str, Any]:
    """The template as CloudFormation receives it (samtranslator, from the dev deps)."""
    from samtranslator.translator.transform import transform

    class NoManagedPolicies:  # the templates name no managed policies by name
        def load(self) -> dict[str, str]:
            return {}

    document = json.loads(json.dumps(document))
    for resource in document["Resources"].values():  # the translator wants S3 code URIs
        for key in ("CodeUri", "ContentUri"):
            if isinstance(resource.get("Properties", {}).get(key), str):
                resource["Properties"][key] = f"s3://bucket/{resource['Properties'][key]}.zip"
    output: dict[str, Any] = transform(document, {}, NoManagedPolicies())
    return output


@pytest.fixture(scope="module")
def transformed(doc: dict[str, Any], monkeypatch_module: None) -> dict[str, Any]:
    return _translate(doc)


@pytest.fixture(scope="module")
def transformed_example(monkeypatch_module: None) -> dict[str, Any]:
    return _translate(load_template(EXAMPLE).document())


@pytest.fixture(scope="module")
def monkeypatch_module() -> Any:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        yield


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# ------------------------------------------------- only the broker's roles can sign


def _role_arn(role: str) -> str:
    return f"arn:aws:iam::{ACCOUNT}:role/tokenbroker-{role}-ABC123"


def _resolve_arn(value: Any) -> str:
    """GetAtt X.Arn of a role -> that role's ARN; the root Sub -> the account root."""
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        role, attr = value["Fn::GetAtt"]
        assert attr == "Arn"
        return _role_arn(role)
    if isinstance(value, dict) and "Fn::Sub" in value:
        return (
            str(value["Fn::Sub"])
            .replace("${AWS::Partition}", "aws")
            .replace("${AWS::AccountId}", ACCOUNT)
        )
    assert value == "*", value
    return "*"


def _decide(policy: dict[str, Any], principal: str, action: str) -> str:
    """IAM evaluation of a key policy for ``principal`` (as aws:PrincipalArn) doing
    ``action``: an explicit Deny wins; else an Allow naming the principal (or the root,
    which delegates to IAM) allows; else implicit deny. Only the constructs this
    template uses are understood; anything else fails the test."""
    allowed, delegated = False, False
    for statement in policy["Statement"]:
        assert set(statement) <= {"Sid", "Effect", "Principal", "Action", "Resource", "Condition"}
        actions = _as_list(statement["Action"])
        if not any(a == action or a == "kms:*" for a in actions):
            continue
        who = statement["Principal"]
        names = ["*"] if who == "*" else [_resolve_arn(v) for v in _as_list(who["AWS"])]
        matches = "*" in names or principal in names
        root = f"arn:aws:iam::{ACCOUNT}:root"
        if root in names and principal.startswith(f"arn:aws:iam::{ACCOUNT}:"):
            matches, delegated = True, True
        for operator, conditions in (statement.get("Condition") or {}).items():
            assert operator == "ArnNotEquals", operator
            ((key, value),) = conditions.items()
            assert key == "aws:PrincipalArn"
            matches = matches and principal != _resolve_arn(value)
        if not matches:
            continue
        if statement["Effect"] == "Deny":
            return "deny"
        allowed = True
    if allowed:
        return "allow (iam decides)" if delegated and not _named(policy, principal) else "allow"
    return "implicit deny"


def _named(policy: dict[str, Any], principal: str) -> bool:
    return any(
        statement["Effect"] == "Allow"
        and statement["Principal"] != "*"
        and principal in [_resolve_arn(v) for v in _as_list(statement["Principal"]["AWS"])]
        for statement in policy["Statement"]
    )


@pytest.mark.parametrize(("key", "signer"), SIGNERS.items())
def test_only_the_signing_function_role_may_sign_with_each_key(
    doc: dict[str, Any], key: str, signer: str
) -> None:
    policy = doc["Resources"][key]["Properties"]["KeyPolicy"]
    assert _decide(policy, _role_arn(signer), "kms:Sign") == "allow"
    others = [
        f"arn:aws:iam::{ACCOUNT}:root",
        f"arn:aws:iam::{ACCOUNT}:user/admin",  # AdministratorAccess through IAM
        f"arn:aws:iam::{ACCOUNT}:role/PowerUser",
        f"arn:aws:iam::{ACCOUNT}:role/{signer}",  # same name, not that role's ARN
        *(_role_arn(r) for r in ("AuthorizerFunctionRole", "DiscoveryFunctionRole")),
        *(_role_arn(r) for r in SIGNERS.values() if r != signer),
        "arn:aws:iam::999999999999:role/outsider",
    ]
    for principal in others:
        assert _decide(policy, principal, "kms:Sign") in ("deny", "implicit deny"), principal
    # administration stays with the account (through IAM), and it is never denied
    for action in ("kms:PutKeyPolicy", "kms:ScheduleKeyDeletion", "kms:GetPublicKey"):
        assert _decide(policy, f"arn:aws:iam::{ACCOUNT}:user/admin", action) == (
            "allow (iam decides)"
        )


@pytest.mark.parametrize(("key", "signer"), SIGNERS.items())
def test_the_deny_names_the_role_the_function_runs_as_and_no_cycle_exists(
    transformed: dict[str, Any], key: str, signer: str
) -> None:
    resources = transformed["Resources"]
    function = signer.removesuffix("Role")
    assert resources[function]["Properties"]["Role"] == {"Fn::GetAtt": [signer, "Arn"]}
    assert resources[signer]["Type"] == "AWS::IAM::Role"
    (deny,) = (
        s for s in resources[key]["Properties"]["KeyPolicy"]["Statement"] if s["Effect"] == "Deny"
    )
    assert (deny["Principal"], deny["Action"], deny["Resource"]) == ("*", "kms:Sign", "*")
    role_arn = {"Fn::GetAtt": [signer, "Arn"]}
    assert deny["Condition"] == {"ArnNotEquals": {"aws:PrincipalArn": role_arn}}
    # the key names the role, so the role must not name the key (a circular dependency)
    assert key not in json.dumps(resources[signer])


def test_no_other_role_or_managed_policy_grants_kms_sign(transformed: dict[str, Any]) -> None:
    for name, resource in transformed["Resources"].items():
        if resource["Type"] in ("AWS::IAM::Role", "AWS::IAM::ManagedPolicy"):
            assert "kms:Sign" not in json.dumps(resource), name


# ------------------------------------------------------- what other stacks import


def test_other_stacks_import_issuer_endpoints_authorizers_and_policies(
    doc: dict[str, Any],
) -> None:
    outputs = doc["Outputs"]
    exports = {
        name: out["Export"]["Name"]["Fn::Sub"] for name, out in outputs.items() if "Export" in out
    }
    assert exports == {
        name: f"${{AWS::StackName}}-{name}"
        for name in (
            "Issuer",
            "TokenEndpoint",
            "JwksUrl",
            "AuthorizerFunctionArn",
            "HttpApiAuthorizerFunctionArn",
            "AdminPolicyArn",
            "AuditorPolicyArn",
        )
    }
    assert outputs["HttpApiAuthorizerFunctionArn"]["Condition"] == "DeployHttpApiAuthorizer"
    derived, fixed = outputs["Issuer"]["Value"]["Fn::If"][1:]
    assert derived == outputs["ApiUrl"]["Value"]
    assert fixed == {"Ref": "IssuerUrl"}
    for name, path in (("TokenEndpoint", "/oauth2/token"), ("JwksUrl", "/.well-known/jwks.json")):
        condition, derived, fixed = outputs[name]["Value"]["Fn::If"]
        assert condition == "IssuerIsDerived"
        assert derived == {"Fn::Sub": outputs["ApiUrl"]["Value"]["Fn::Sub"] + path}
        assert fixed == {"Fn::Sub": "${IssuerUrl}" + path}
    assert doc["Conditions"]["IssuerIsDerived"] == {"Fn::Equals": [{"Ref": "IssuerUrl"}, ""]}


def test_the_discovery_paths_are_the_ones_the_outputs_name(template: Template) -> None:
    env = template.environment("DiscoveryFunction", **_fake(template))
    assert (env["TOKEN_ENDPOINT_PATH"], env["JWKS_PATH"]) == (
        "/oauth2/token",
        "/.well-known/jwks.json",
    )


def _fake(template: Template) -> dict[str, Any]:
    refs = {name: f"physical-{name}" for name in template.document()["Resources"]}
    return {
        "refs": refs,
        "attrs": {(name, "Arn"): f"arn:{name}" for name in refs},
        "pseudo": {"AWS::StackName": "s", "AWS::Region": "eu-west-1", "AWS::AccountId": "1"},
    }


def test_other_apis_need_a_fixed_issuer_or_the_deployment_fails(doc: dict[str, Any]) -> None:
    (rule,) = doc["Rules"].values()
    condition = json.dumps(rule["RuleCondition"])
    assert "AuthorizerInvokerSourceArn" in condition
    assert "EnableHttpApiAuthorizer" in condition
    (assertion,) = rule["Assertions"]
    assert assertion["Assert"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "IssuerUrl"}, ""]}]}
    assert "IssuerUrl is required" in assertion["AssertDescription"]


def test_route_scopes_come_from_a_parameter_both_authorizers_read(template: Template) -> None:
    resources = template.document()["Resources"]
    for function in ("AuthorizerFunction", "HttpApiAuthorizerFunction"):
        variables = resources[function]["Properties"]["Environment"]["Variables"]
        assert variables["ROUTE_SCOPES"] == {"Ref": "RouteScopes"}
    custom = '{"GET /orders/{id}": "orders:read"}'
    env = template.environment(
        "AuthorizerFunction", **_fake(template), parameters={"RouteScopes": custom}
    )
    assert dict(Settings.from_mapping(env).route_scopes) == {"GET /orders/{id}": "orders:read"}


def test_the_http_api_authorizer_is_optional_and_shares_the_rest_authorizers_settings(
    template: Template,
) -> None:
    resources = template.document()["Resources"]
    http = resources["HttpApiAuthorizerFunction"]
    assert http["Condition"] == "DeployHttpApiAuthorizer"
    assert http["Properties"]["CodeUri"] == "functions/http_api_authorizer/"
    rest = resources["AuthorizerFunction"]["Properties"]
    # but server nonces (RFC 9449 §9): a payload 2.0 simple response cannot carry the
    # DPoP-Nonce header, so the HTTP API authorizer never requires them
    rest_env = {
        k: v
        for k, v in rest["Environment"]["Variables"].items()
        if not k.startswith("DPOP_NONCE_") and k != "RESOURCE_METADATA_URL"
    }
    assert http["Properties"]["Environment"] == {"Variables": rest_env}
    assert http["Properties"]["Policies"][0]["Statement"] == [
        {k: v for k, v in statement.items()}
        for statement in rest["Policies"][0]["Statement"]
        if statement["Sid"] != "ReadDpopNonceSecret"
    ]


def test_other_apis_may_invoke_the_authorizers_only_from_the_given_source_arn(
    doc: dict[str, Any],
) -> None:
    resources = doc["Resources"]
    for name, function, condition in (
        ("AuthorizerInvokePermission", "AuthorizerFunction", "OtherApisInvokeAuthorizer"),
        (
            "HttpApiAuthorizerInvokePermission",
            "HttpApiAuthorizerFunction",
            "OtherApisInvokeHttpApiAuthorizer",
        ),
    ):
        permission = resources[name]
        assert permission["Condition"] == condition
        props = permission["Properties"]
        assert props["FunctionName"] == {"Fn::GetAtt": [function, "Arn"]}
        assert props["Principal"] == "apigateway.amazonaws.com"
        assert props["SourceArn"] == {"Ref": "AuthorizerInvokerSourceArn"}
        assert props["SourceAccount"] == {"Ref": "AWS::AccountId"}
    pattern = doc["Parameters"]["AuthorizerInvokerSourceArn"]["AllowedPattern"]
    assert pattern.startswith("^(arn:aws[a-z-]*:execute-api:")


# ------------------------------------------------------------------ admins, floods


def test_the_admin_policy_manages_clients_and_devices_and_nothing_else(
    doc: dict[str, Any],
) -> None:
    statements = doc["Resources"]["AdminPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    grants = {
        (action, json.dumps(resource, sort_keys=True))
        for s in statements
        for action in _as_list(s["Action"])
        for resource in _as_list(s["Resource"])
    }
    assert all(s["Effect"] == "Allow" and s["Sid"] and "Condition" not in s for s in statements)
    actions = {a for a, _ in grants}
    assert not {a for a in actions if a.startswith("kms:")}
    assert not {a for a in actions if "*" in a}
    assert {a for a, r in grants if "UsageTable" in r} == {"dynamodb:PutItem"}  # no reads
    assert "dynamodb:DeleteItem" not in actions
    assert {a for a in actions if not a.startswith("dynamodb:")} == {
        "ssm:GetParameter",
        "cloudformation:DescribeStacks",
    }


def test_an_optional_waf_rate_limits_the_token_endpoint_per_ip_and_adds_common_rules(
    doc: dict[str, Any],
) -> None:
    resources = doc["Resources"]
    acl, association = resources["WebAcl"], resources["WebAclAssociation"]
    assert acl["Condition"] == association["Condition"] == "DeployWaf"
    assert doc["Parameters"]["EnableWaf"]["Default"] == "false"
    rate, common = acl["Properties"]["Rules"]
    statement = rate["Statement"]["RateBasedStatement"]
    assert (statement["AggregateKeyType"], statement["Limit"]) == (
        "IP",
        {"Ref": "WafTokenRequestsPer5Minutes"},
    )
    match = statement["ScopeDownStatement"]["ByteMatchStatement"]
    assert (match["SearchString"], match["FieldToMatch"]) == ("/oauth2/token", {"UriPath": {}})
    assert rate["Action"] == {"Block": {}}
    group = common["Statement"]["ManagedRuleGroupStatement"]
    assert (group["VendorName"], group["Name"]) == ("AWS", "AWSManagedRulesCommonRuleSet")
    assert "${BrokerApi.Stage}" in association["Properties"]["ResourceArn"]["Fn::Sub"]


# ---------------------------------------------------------- the other templates


def _lint(path: Path, regions: list[str]) -> list[str]:
    return [str(m) for m in lint_file(path, config=ManualArgs(regions=regions))]


def test_the_example_protected_api_passes_cfn_lint() -> None:
    assert _lint(EXAMPLE, ["eu-west-1"]) == []


def test_the_example_uses_the_exported_authorizer_without_caching(
    transformed_example: dict[str, Any],
) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    assert "${BrokerStackName}-AuthorizerFunctionArn" in text
    (api,) = (
        r["Properties"]
        for r in transformed_example["Resources"].values()
        if r["Type"] == "AWS::ApiGateway::RestApi"
    )
    schemes = api["Body"]["components"]["securitySchemes"]
    (scheme,) = schemes.values()
    authorizer = scheme["x-amazon-apigateway-authorizer"]
    assert authorizer["type"] == "request"
    assert authorizer["authorizerResultTtlInSeconds"] == 0
    sources = "method.request.header.Authorization, method.request.header.DPoP"
    assert authorizer["identitySource"] == sources
    assert "Fn::ImportValue" in json.dumps(authorizer["authorizerUri"])


def test_the_edge_template_passes_cfn_lint_in_us_east_1() -> None:
    assert _lint(EDGE, ["us-east-1"]) == []


# ------------------------------------------------------------ the README's deploy path


def test_the_readme_deploys_with_the_pinned_sam_and_the_samconfig_environments() -> None:
    import re
    import tomllib

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    script = (ROOT / "scripts" / "test").read_text(encoding="utf-8")
    (pinned,) = re.findall(r'^SAM_VERSION="([0-9.]+)"$', script, re.MULTILINE)
    assert f"pins ({pinned}" in readme
    assert "sam build --template template.yaml" in script  # the test command builds
    config = tomllib.loads((ROOT / "infra" / "samconfig.toml").read_text(encoding="utf-8"))
    for verb in ("build", "deploy"):
        line = next(
            x for x in readme.splitlines() if f"sam {verb}" in x and "--config-env prod" in x
        )
        assert "--config-file infra/samconfig.toml" in line
        assert verb in config["prod"]
    assert "parameter_overrides" in config["prod"]["deploy"]["parameters"]
    assert "--use-container" in readme
    assert "**required** for other APIs" in readme  # IssuerUrl


def _edge_statements(quotas_table: str) -> list[dict[str, Any]]:
    """infra/edge.yaml's role statements with ``QuotasTableName`` resolved (its ``!If``
    on ``HasQuotas`` taken as CloudFormation would)."""
    from tokenbroker.local.template import loads

    document = loads(EDGE.read_text(encoding="utf-8"))
    function = document["Resources"]["EdgeAuthorizerFunction"]["Properties"]
    [policy] = function["Policies"]

    def resolve(node: Any) -> Any:
        if isinstance(node, dict) and set(node) == {"Fn::If"}:
            condition, yes, no = node["Fn::If"]
            assert condition == "HasQuotas"
            return resolve(yes if quotas_table else no)
        if isinstance(node, dict):
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [r for r in (resolve(v) for v in node) if r != {"Ref": "AWS::NoValue"}]
        return node

    return resolve(policy["Statement"])  # type: ignore[no-any-return]


def test_the_edge_role_has_the_authorizers_quota_grants_only_with_a_quotas_table(
    doc: dict[str, Any],
) -> None:
    """Quotas at CloudFront need the same grants as the API authorizers (template.yaml):
    counters ``use#*`` updated, rules ``rule#*`` queried, the rules item in the liveness
    BatchGetItem; without ``QuotasTableName`` the role may touch no quota table."""
    without = _edge_statements("")
    assert "QuotasTable" not in json.dumps(without)
    assert {s["Sid"] for s in without} == {
        "CheckDeviceAndClientStillActive",
        "RecordUsage",
        "VerifyTokens",
    }
    with_quotas = {s["Sid"]: s for s in _edge_statements("q")}
    api = {
        s["Sid"]: s
        for s in doc["Resources"]["AuthorizerFunction"]["Properties"]["Policies"][0]["Statement"]
    }
    for sid in ("LeaseQuota", "ReadQuotaRules"):
        assert with_quotas[sid]["Action"] == api[sid]["Action"], sid
        assert with_quotas[sid]["Condition"] == api[sid]["Condition"], sid
        assert "${QuotasTableName}" in with_quotas[sid]["Resource"]["Fn::Sub"], sid
    batch = with_quotas["CheckDeviceAndClientStillActive"]["Resource"]
    assert any("${QuotasTableName}" in r["Fn::Sub"] for r in batch)
    assert "QuotasTableName" in doc["Outputs"]
