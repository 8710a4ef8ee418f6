"""CloudFormation-aware reader of template.yaml (the only code that reads it).

``loads`` turns the YAML, short-form tags included, into plain dicts in the long form
CloudFormation itself uses (``!Ref X`` -> ``{"Ref": "X"}``, ``!GetAtt A.B`` ->
``{"Fn::GetAtt": ["A", "B"]}``). ``Template`` answers what the tests and the local stack
ask: tables and their schemas, functions and their environment, routes. Intrinsics are
resolved against values the caller supplies (physical ids from the local provisioner,
parameter overrides, pseudo parameters); nothing is guessed, and a missing value is a
``KeyError`` naming it.
"""

from __future__ import annotations

import base64
import copy
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

TEMPLATE_FILE = "template.yaml"
SAM_FUNCTION = "AWS::Serverless::Function"
SAM_API = "AWS::Serverless::Api"
DYNAMODB_TABLE = "AWS::DynamoDB::Table"
S3_BUCKET = "AWS::S3::Bucket"
#: the API SAM creates for ``Type: Api`` events without a RestApiId
IMPLICIT_API = "ServerlessRestApi"
#: pseudo parameters that have one value wherever the stack runs (in the aws partition)
DEFAULT_PSEUDO: Mapping[str, str] = {"AWS::Partition": "aws", "AWS::URLSuffix": "amazonaws.com"}

# SAM Globals section -> the resource type it applies to
_GLOBALS_SECTIONS = {
    "Function": SAM_FUNCTION,
    "Api": SAM_API,
    "HttpApi": "AWS::Serverless::HttpApi",
    "SimpleTable": "AWS::Serverless::SimpleTable",
    "StateMachine": "AWS::Serverless::StateMachine",
    "LayerVersion": "AWS::Serverless::LayerVersion",
}


class TemplateError(ValueError):
    """template.yaml says something this loader cannot answer, or says it wrongly."""


class UnresolvedReference(TemplateError, KeyError):
    """An intrinsic names something the caller gave no value for (or that does not exist)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


# ----------------------------------------------------------------------------- YAML


class _CfnLoader(yaml.SafeLoader):
    """SafeLoader plus the CloudFormation short-form tags. Dates stay text:
    CloudFormation reads ``AWSTemplateFormatVersion: 2010-09-09`` as a string."""


_CfnLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _node_value(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    raise yaml.constructor.ConstructorError(None, None, "unexpected node", node.start_mark)


def _long_form(name: str) -> Callable[[yaml.SafeLoader, yaml.Node], dict[str, Any]]:
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
        return {name: _node_value(loader, node)}

    return construct


def _get_att(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
    value = _node_value(loader, node)
    if isinstance(value, str):
        resource, dot, attribute = value.partition(".")
        if not dot or not resource or not attribute:
            raise yaml.constructor.ConstructorError(
                None, None, f"!GetAtt {value!r} is not Resource.Attribute", node.start_mark
            )
        value = [resource, attribute]
    return {"Fn::GetAtt": value}


_CfnLoader.add_constructor("!Ref", _long_form("Ref"))
_CfnLoader.add_constructor("!Condition", _long_form("Condition"))
_CfnLoader.add_constructor("!GetAtt", _get_att)
for _fn in [
    "And",
    "Base64",
    "Cidr",
    "Equals",
    "FindInMap",
    "GetAZs",
    "If",
    "ImportValue",
    "Join",
    "Length",
    "Not",
    "Or",
    "Select",
    "Split",
    "Sub",
    "ToJsonString",
    "Transform",
]:
    _CfnLoader.add_constructor(f"!{_fn}", _long_form(f"Fn::{_fn}"))


def loads(text: str) -> dict[str, Any]:
    """Parse a CloudFormation YAML document into plain dicts, intrinsics in long form."""
    try:
        document = yaml.load(text, Loader=_CfnLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise TemplateError(f"not a readable template: {exc}") from exc
    if not isinstance(document, dict):
        raise TemplateError("a template must be a YAML mapping")
    return document


# ------------------------------------------------------------------------ the model


@dataclass(frozen=True)
class Route:
    """One ``Type: Api`` event: ``method`` is upper case, ``auth`` the authorizer name."""

    method: str
    path: str
    function: str
    api: str
    auth: str | None = None


@dataclass(frozen=True)
class FunctionSpec:
    logical_id: str
    code_uri: Path  # absolute
    handler: str  # e.g. "app.handler"
    #: Globals.Function.Environment.Variables merged with the function's, unresolved
    environment_template: Mapping[str, Any]
    events: tuple[Route, ...]


def find_template(start: Path | None = None) -> Path:
    """The nearest template.yaml walking up from ``start`` (default: the working
    directory), then from this file's location (a source checkout)."""
    origins = [start or Path.cwd(), Path(__file__).resolve().parent]
    for origin in origins:
        for directory in (origin.resolve(), *origin.resolve().parents):
            candidate = directory / TEMPLATE_FILE
            if candidate.is_file():
                return candidate
    searched = " or ".join(str(o) for o in origins)
    raise FileNotFoundError(f"no {TEMPLATE_FILE} in or above {searched}")


def load_template(path: Path | None = None) -> Template:
    path = (path or find_template()).resolve()
    return Template(loads(path.read_text(encoding="utf-8")), path)


class Template:
    """A parsed template. Built complete; accessors return copies, so it cannot drift."""

    __slots__ = ("_doc", "path")

    def __init__(self, document: Mapping[str, Any], path: Path) -> None:
        if not isinstance(document.get("Resources"), dict):
            raise TemplateError(f"{path}: no Resources mapping")
        self._doc: dict[str, Any] = copy.deepcopy(dict(document))
        self.path = path

    def __repr__(self) -> str:
        return f"Template({str(self.path)!r})"

    def document(self) -> dict[str, Any]:
        """The whole template (long-form intrinsics), as a copy."""
        return copy.deepcopy(self._doc)

    # -- parameters ------------------------------------------------------------------

    def _parameters(self) -> dict[str, Any]:
        return dict(self._doc.get("Parameters") or {})

    def parameters_defaults(self) -> dict[str, str]:
        return {
            name: _text(spec["Default"], f"Parameters.{name}.Default")
            for name, spec in self._parameters().items()
            if "Default" in spec
        }

    def parameter_values(self, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
        """Defaults with ``overrides`` applied, each override checked against the
        parameter's constraints as CloudFormation would (TemplateError if not)."""
        declared = self._parameters()
        values = self.parameters_defaults()
        for name, value in (overrides or {}).items():
            if name not in declared:
                raise TemplateError(f"unknown parameter {name!r}")
            _check_parameter(name, declared[name], str(value))
            values[name] = str(value)
        return values

    # -- resources -------------------------------------------------------------------

    def _resource(self, logical_id: str, type_: str | None = None) -> dict[str, Any]:
        resource = self._doc["Resources"].get(logical_id)
        if not isinstance(resource, dict) or (type_ and resource.get("Type") != type_):
            raise UnresolvedReference(
                f"{self.path.name} has no {type_ or 'resource'} {logical_id!r}"
            )
        return resource

    def resources(self, type_: str) -> dict[str, dict[str, Any]]:
        """logical id -> Properties (as written, without SAM Globals) of each resource of
        ``type_``, in template order."""
        return {
            logical_id: copy.deepcopy(resource.get("Properties") or {})
            for logical_id, resource in self._doc["Resources"].items()
            if isinstance(resource, dict) and resource.get("Type") == type_
        }

    def tables(self) -> dict[str, dict[str, Any]]:
        return self.resources(DYNAMODB_TABLE)

    def sam_properties(self, logical_id: str, type_: str) -> dict[str, Any]:
        """Properties of a SAM resource with its Globals section merged in, as SAM does
        (mappings merge with local keys winning, lists concatenate globals first)."""
        properties = copy.deepcopy(self._resource(logical_id, type_).get("Properties") or {})
        section = next((s for s, t in _GLOBALS_SECTIONS.items() if t == type_), None)
        global_properties = (self._doc.get("Globals") or {}).get(section) or {}
        merged = _merge_globals(copy.deepcopy(global_properties), properties)
        assert isinstance(merged, dict)
        return merged

    # -- functions and routes --------------------------------------------------------

    def functions(self) -> dict[str, FunctionSpec]:
        return {
            logical_id: self._function(logical_id) for logical_id in self.resources(SAM_FUNCTION)
        }

    def _function(self, logical_id: str) -> FunctionSpec:
        props = self.sam_properties(logical_id, SAM_FUNCTION)
        code_uri, handler = props.get("CodeUri"), props.get("Handler")
        if not isinstance(code_uri, str) or code_uri.startswith("s3://"):
            raise TemplateError(f"{logical_id}: CodeUri must be a local path, not {code_uri!r}")
        if not isinstance(handler, str):
            raise TemplateError(f"{logical_id}: Handler must be a string")
        variables = (props.get("Environment") or {}).get("Variables") or {}
        return FunctionSpec(
            logical_id=logical_id,
            code_uri=(self.path.parent / code_uri).resolve(),
            handler=handler,
            environment_template=variables,
            events=tuple(self._routes(logical_id, props)),
        )

    def _routes(self, function: str, props: Mapping[str, Any]) -> list[Route]:
        routes = []
        for name, event in (props.get("Events") or {}).items():
            if event.get("Type") != "Api":
                continue
            spec = event.get("Properties") or {}
            api_ref = spec.get("RestApiId", IMPLICIT_API)
            api = api_ref["Ref"] if isinstance(api_ref, dict) and "Ref" in api_ref else api_ref
            if not isinstance(api, str) or not isinstance(spec.get("Path"), str):
                raise TemplateError(f"{function}.Events.{name}: needs a Path and a Ref RestApiId")
            auth = (spec.get("Auth") or {}).get("Authorizer")
            if auth is None:
                auth = self._default_authorizer(api)
            routes.append(
                Route(
                    method=str(spec.get("Method", "ANY")).upper(),
                    path=spec["Path"],
                    function=function,
                    api=api,
                    auth=None if auth in (None, "NONE") else str(auth),
                )
            )
        return routes

    def _default_authorizer(self, api: str) -> Any:
        if api == IMPLICIT_API:
            auth = ((self._doc.get("Globals") or {}).get("Api") or {}).get("Auth") or {}
        else:
            auth = self.sam_properties(api, SAM_API).get("Auth") or {}
        return auth.get("DefaultAuthorizer")

    def routes(self) -> list[Route]:
        return [route for spec in self.functions().values() for route in spec.events]

    # -- intrinsics ------------------------------------------------------------------

    def resolve(
        self,
        value: Any,
        refs: Mapping[str, str] | None = None,
        attrs: Mapping[tuple[str, str], str] | None = None,
        parameters: Mapping[str, str] | None = None,
        pseudo: Mapping[str, str] | None = None,
    ) -> Any:
        """``value`` with every intrinsic replaced: Ref to a parameter -> override or
        default, to a resource -> ``refs[id]``, to a pseudo parameter -> ``pseudo``;
        Fn::GetAtt -> ``attrs[(id, attr)]``; Sub, Join, Select, Split, If (with the
        template's Conditions), Equals/Not/And/Or, FindInMap, Base64. Keys whose value is
        ``AWS::NoValue`` disappear."""
        return _Resolver(self, refs, attrs, self.parameter_values(parameters), pseudo).resolve(
            value
        )

    def environment(
        self,
        function_logical_id: str,
        refs: Mapping[str, str],
        attrs: Mapping[tuple[str, str], str] | None = None,
        parameters: Mapping[str, str] | None = None,
        pseudo: Mapping[str, str] | None = None,
    ) -> dict[str, str]:
        """The function's environment variables (Globals merged in), resolved, as text."""
        props = self.sam_properties(function_logical_id, SAM_FUNCTION)
        environment = self.resolve(props.get("Environment") or {}, refs, attrs, parameters, pseudo)
        variables = environment.get("Variables") or {}
        return {
            name: _text(value, f"{function_logical_id}.Environment.Variables.{name}")
            for name, value in variables.items()
        }

    # -- DynamoDB --------------------------------------------------------------------

    def create_table_kwargs(self, logical_id: str, table_name: str) -> dict[str, Any]:
        """``dynamodb.create_table(**kwargs)`` for the table's Properties. Settings that
        need other calls (TTL, PITR, tags, deletion protection) or exist only in
        CloudFormation are dropped; see ``ttl_attribute`` and ``point_in_time_recovery``."""
        props = self.resolve(self._resource(logical_id, DYNAMODB_TABLE).get("Properties") or {})
        kwargs: dict[str, Any] = {"TableName": table_name}
        for key, value in props.items():
            if key in _TABLE_PASSED:
                kwargs[key] = value
            elif key == "GlobalSecondaryIndexes":
                kwargs[key] = [_without(index, _GSI_DROPPED) for index in value]
            elif key == "StreamSpecification":
                kwargs[key] = {"StreamEnabled": True, "StreamViewType": value["StreamViewType"]}
            elif key == "SSESpecification":
                sse = {"Enabled": _truthy(value.get("SSEEnabled"))}
                sse.update(_without(value, {"SSEEnabled"}))
                kwargs[key] = sse
            elif key not in _TABLE_DROPPED:
                raise TemplateError(f"{logical_id}: no local mapping for table property {key!r}")
        return kwargs

    def ttl_attribute(self, logical_id: str) -> str | None:
        spec = self._table_property(logical_id, "TimeToLiveSpecification")
        if not _truthy(spec.get("Enabled")):
            return None
        return _text(spec.get("AttributeName"), f"{logical_id}.TimeToLiveSpecification")

    def point_in_time_recovery(self, logical_id: str) -> bool:
        spec = self._table_property(logical_id, "PointInTimeRecoverySpecification")
        return _truthy(spec.get("PointInTimeRecoveryEnabled"))

    def _table_property(self, logical_id: str, name: str) -> dict[str, Any]:
        props = self._resource(logical_id, DYNAMODB_TABLE).get("Properties") or {}
        value = self.resolve(props.get(name) or {})
        assert isinstance(value, dict)
        return value

    # -- S3 --------------------------------------------------------------------------

    def bucket_name(self, logical_id: str, default: str) -> str:
        """The bucket's ``BucketName`` if the template fixes one, else ``default``."""
        props = self._resource(logical_id, S3_BUCKET).get("Properties") or {}
        return _text(self.resolve(props.get("BucketName", default)), f"{logical_id}.BucketName")

    def bucket_requests(
        self, logical_id: str, bucket_name: str, region: str
    ) -> list[tuple[str, dict[str, Any]]]:
        """The ``s3`` client calls (method name, kwargs) that build the bucket from its
        Properties: ``create_bucket`` first, then one call per configuration. Settings
        with no local meaning (tags, logging, lifecycle, notifications) are dropped; any
        other unknown property is a TemplateError rather than a silent gap."""
        props = self.resolve(self._resource(logical_id, S3_BUCKET).get("Properties") or {})
        create: dict[str, Any] = {"Bucket": bucket_name}
        if region != "us-east-1":  # us-east-1 rejects an explicit LocationConstraint
            create["CreateBucketConfiguration"] = {"LocationConstraint": region}
        if _truthy(props.get("ObjectLockEnabled")):
            create["ObjectLockEnabledForBucket"] = True
        requests: list[tuple[str, dict[str, Any]]] = [("create_bucket", create)]
        bucket = {"Bucket": bucket_name}
        for key, value in props.items():
            if key == "VersioningConfiguration":
                requests.append(
                    ("put_bucket_versioning", {**bucket, "VersioningConfiguration": value})
                )
            elif key == "BucketEncryption":
                rules = [
                    {
                        # CloudFormation and the S3 API spell the default differently
                        ("ApplyServerSideEncryptionByDefault" if k == _SSE_DEFAULT else k): v
                        for k, v in rule.items()
                    }
                    for rule in value["ServerSideEncryptionConfiguration"]
                ]
                requests.append(
                    (
                        "put_bucket_encryption",
                        {**bucket, "ServerSideEncryptionConfiguration": {"Rules": rules}},
                    )
                )
            elif key == "PublicAccessBlockConfiguration":
                config = {k: _truthy(v) for k, v in value.items()}
                requests.append(
                    (
                        "put_public_access_block",
                        {**bucket, "PublicAccessBlockConfiguration": config},
                    )
                )
            elif key == "OwnershipControls":
                requests.append(
                    ("put_bucket_ownership_controls", {**bucket, "OwnershipControls": value})
                )
            elif key == "ObjectLockConfiguration":
                requests.append(
                    (
                        "put_object_lock_configuration",
                        {**bucket, "ObjectLockConfiguration": value},
                    )
                )
            elif key not in _BUCKET_DROPPED:
                raise TemplateError(f"{logical_id}: no local mapping for bucket property {key!r}")
        return requests


_TABLE_PASSED = frozenset(
    {
        "KeySchema",
        "AttributeDefinitions",
        "BillingMode",
        "ProvisionedThroughput",
        "LocalSecondaryIndexes",
        "TableClass",
        "OnDemandThroughput",
        "WarmThroughput",
    }
)
_TABLE_DROPPED = frozenset(
    {
        "TableName",  # the provisioner names tables per stack
        "PointInTimeRecoverySpecification",  # update_continuous_backups
        "TimeToLiveSpecification",  # update_time_to_live
        "Tags",
        "DeletionProtectionEnabled",  # a local stack must be disposable
        "ContributorInsightsSpecification",
        "KinesisStreamSpecification",
        "ResourcePolicy",
        "ImportSourceSpecification",
    }
)
_GSI_DROPPED = frozenset({"ContributorInsightsSpecification"})
_SSE_DEFAULT = "ServerSideEncryptionByDefault"
_BUCKET_DROPPED = frozenset(
    {
        "BucketName",  # see bucket_name
        "ObjectLockEnabled",  # a create_bucket argument
        "Tags",
        "LoggingConfiguration",
        "LifecycleConfiguration",  # nothing expires locally (moto does not run lifecycles)
        "NotificationConfiguration",
        "MetricsConfigurations",
        "AnalyticsConfigurations",
        "InventoryConfigurations",
        "IntelligentTieringConfigurations",
    }
)


# ------------------------------------------------------------------------- helpers


def _merge_globals(global_value: Any, local_value: Any) -> Any:
    """SAM's Globals rules: mappings merge (local keys win), lists concatenate
    (globals first), anything else (intrinsics included) is the local value."""
    if isinstance(global_value, dict) and isinstance(local_value, dict):
        if _intrinsic_name(global_value) or _intrinsic_name(local_value):
            return local_value
        merged = dict(global_value)
        for key, value in local_value.items():
            merged[key] = _merge_globals(merged[key], value) if key in merged else value
        return merged
    if isinstance(global_value, list) and isinstance(local_value, list):
        return global_value + local_value
    return local_value


def _intrinsic_name(value: Mapping[str, Any]) -> str | None:
    if len(value) != 1:
        return None
    (key,) = value
    return key if key in ("Ref", "Condition") or key.startswith("Fn::") else None


def _without(mapping: Mapping[str, Any], keys: frozenset[str] | set[str]) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if k not in keys}


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


def _text(value: Any, where: str) -> str:
    """CloudFormation's string form of a scalar (booleans as ``true``/``false``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise TemplateError(f"{where}: expected a string, got {value!r}")


def _check_parameter(name: str, spec: Mapping[str, Any], value: str) -> None:
    def fail(why: str) -> TemplateError:
        return TemplateError(f"parameter {name}={value!r}: {why}")

    allowed = spec.get("AllowedValues")
    if allowed is not None and value not in [_text(v, name) for v in allowed]:
        raise fail(f"not one of {allowed}")
    if spec.get("Type") == "Number":
        try:
            number = float(value)
        except ValueError:
            raise fail("not a number") from None
        if "MinValue" in spec and number < float(spec["MinValue"]):
            raise fail(f"below MinValue {spec['MinValue']}")
        if "MaxValue" in spec and number > float(spec["MaxValue"]):
            raise fail(f"above MaxValue {spec['MaxValue']}")
    if "MinLength" in spec and len(value) < int(spec["MinLength"]):
        raise fail(f"shorter than MinLength {spec['MinLength']}")
    if "MaxLength" in spec and len(value) > int(spec["MaxLength"]):
        raise fail(f"longer than MaxLength {spec['MaxLength']}")
    pattern = spec.get("AllowedPattern")
    if pattern is not None and re.fullmatch(pattern, value) is None:
        raise fail(f"does not match AllowedPattern {pattern!r}")


class _NoValue:
    """``Ref: AWS::NoValue``: the key holding it is removed."""


_NO_VALUE = _NoValue()
_SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")


class _Resolver:
    def __init__(
        self,
        template: Template,
        refs: Mapping[str, str] | None,
        attrs: Mapping[tuple[str, str], str] | None,
        parameters: Mapping[str, str],
        pseudo: Mapping[str, str] | None,
    ) -> None:
        self._doc = template._doc
        self._where = template.path.name
        self._refs = refs or {}
        self._attrs = attrs or {}
        self._parameters = parameters
        self._pseudo = {**DEFAULT_PSEUDO, **(pseudo or {})}
        self._functions: dict[str, Callable[[Any], Any]] = {
            "Ref": self._ref,
            "Condition": self._condition,
            "Fn::GetAtt": self._get_att,
            "Fn::Sub": self._sub,
            "Fn::Join": self._join,
            "Fn::Select": self._select,
            "Fn::Split": self._split,
            "Fn::If": self._if,
            "Fn::Equals": self._equals,
            "Fn::Not": lambda arg: not self._bool(arg[0]),
            "Fn::And": lambda arg: all(self._bool(c) for c in arg),
            "Fn::Or": lambda arg: any(self._bool(c) for c in arg),
            "Fn::FindInMap": self._find_in_map,
            "Fn::Base64": lambda arg: base64.b64encode(self._str(arg).encode()).decode(),
        }

    def resolve(self, value: Any) -> Any:
        if isinstance(value, dict):
            name = _intrinsic_name(value)
            if name is not None:
                function = self._functions.get(name)
                if function is None:
                    raise TemplateError(f"{name} cannot be resolved locally")
                return function(value[name])
            resolved = {k: self.resolve(v) for k, v in value.items()}
            return {k: v for k, v in resolved.items() if v is not _NO_VALUE}
        if isinstance(value, list):
            return [v for v in map(self.resolve, value) if v is not _NO_VALUE]
        return value

    def _str(self, value: Any) -> str:
        return _text(self.resolve(value), "intrinsic argument")

    def _bool(self, value: Any) -> bool:
        result = self.resolve(value)
        if not isinstance(result, bool):
            raise TemplateError(f"expected a condition, got {value!r}")
        return result

    def _ref(self, name: Any) -> Any:
        if name == "AWS::NoValue":
            return _NO_VALUE
        if not isinstance(name, str):
            raise TemplateError(f"Ref takes a name, not {name!r}")
        if name.startswith("AWS::"):
            if name not in self._pseudo:
                raise UnresolvedReference(f"Ref {name}: no value given for this pseudo parameter")
            return self._pseudo[name]
        declared = (self._doc.get("Parameters") or {}).get(name)
        if declared is not None:
            if name not in self._parameters:
                raise UnresolvedReference(f"Ref {name}: parameter has no default and no value")
            value = self._parameters[name]
            kind = str(declared.get("Type", "String"))
            if kind == "CommaDelimitedList" or kind.startswith("List<"):
                return [item.strip() for item in value.split(",")]
            return value
        if name not in self._doc["Resources"]:
            raise UnresolvedReference(f"Ref {name}: not a parameter or resource of {self._where}")
        if name not in self._refs:
            raise UnresolvedReference(
                f"Ref {name}: no physical id given for resource {name!r} "
                f"(have: {', '.join(sorted(self._refs)) or 'none'})"
            )
        return self._refs[name]

    def _get_att(self, arg: Any) -> str:
        resource, attribute = arg[0], self._str(arg[1])
        if resource not in self._doc["Resources"]:
            raise UnresolvedReference(f"GetAtt {resource}.{attribute}: no such resource")
        if (resource, attribute) not in self._attrs:
            raise UnresolvedReference(f"GetAtt {resource}.{attribute}: no value given")
        return self._attrs[(resource, attribute)]

    def _sub(self, arg: Any) -> str:
        if isinstance(arg, str):
            text, variables = arg, {}
        else:
            text, raw = arg
            variables = {k: self._str(v) for k, v in raw.items()}

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):  # ${!Literal} is the text ${Literal}
                return "${" + name[1:] + "}"
            if name in variables:
                return variables[name]
            if "." in name and not name.startswith("AWS::"):
                return self._get_att(name.split(".", 1))
            return _text(self._ref(name), f"${{{name}}}")

        return _SUB_VARIABLE.sub(replace, text)

    def _list(self, value: Any) -> list[Any]:
        result = self.resolve(value)
        if not isinstance(result, list):
            raise TemplateError(f"expected a list, got {value!r}")
        return result

    def _join(self, arg: Any) -> str:
        delimiter, items = arg
        return str(delimiter).join(_text(item, "Fn::Join item") for item in self._list(items))

    def _select(self, arg: Any) -> Any:
        index, items = int(self._str(arg[0])), self._list(arg[1])
        if not 0 <= index < len(items):
            raise TemplateError(f"Fn::Select index {index} out of range")
        return items[index]

    def _split(self, arg: Any) -> list[str]:
        delimiter, source = arg
        return self._str(source).split(str(delimiter))

    def _if(self, arg: Any) -> Any:
        condition, when_true, when_false = arg
        return self.resolve(when_true if self._condition(condition) else when_false)

    def _equals(self, arg: Any) -> bool:
        left, right = (self._str(v) for v in arg)
        return left == right

    def _condition(self, name: Any) -> bool:
        conditions = self._doc.get("Conditions") or {}
        if name not in conditions:
            raise UnresolvedReference(f"Condition {name!r} is not declared")
        return self._bool(conditions[name])

    def _find_in_map(self, arg: Any) -> Any:
        mapping, top, second = (self._str(v) for v in arg[:3])
        try:
            return self.resolve(self._doc["Mappings"][mapping][top][second])
        except (KeyError, TypeError):
            raise UnresolvedReference(
                f"Fn::FindInMap {mapping}.{top}.{second}: no such entry"
            ) from None
