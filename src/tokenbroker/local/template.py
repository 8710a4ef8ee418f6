"""The SAM model: template.yaml read once, as SAM itself would read it.

``loads`` parses the YAML with cfn-lint's loader (the short-form tags become the long
form CloudFormation uses: ``!Ref X`` -> ``{"Ref": "X"}``, ``!GetAtt A.B`` ->
``{"Fn::GetAtt": ["A", "B"]}``; duplicate keys are an error) into plain Python values.
``Template`` then applies the SAM translator's own plugins for the implicit API
(``ServerlessRestApi`` for ``Type: Api`` events without a ``RestApiId``) and for Globals
(mappings merge with local keys winning, lists concatenate globals first), so there is
one Globals merge and it is SAM's. It answers what the tests and the local stack ask:
tables and their schemas, functions and their environment, routes, APIs. Intrinsics are
resolved by ``tokenbroker.local.intrinsics`` against values the caller supplies.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cfnlint.decode import cfn_yaml
from samtranslator.plugins.api.implicit_rest_api_plugin import ImplicitRestApiPlugin
from samtranslator.plugins.globals.globals_plugin import GlobalsPlugin
from samtranslator.public.exceptions import InvalidDocumentException
from yaml import YAMLError

from tokenbroker.local import resources
from tokenbroker.local.errors import LocalConfigError, TemplateError, UnresolvedReference
from tokenbroker.local.intrinsics import DEFAULT_PSEUDO, Resolver, check_parameter, text, truthy

__all__ = [
    "DEFAULT_PSEUDO",
    "DYNAMODB_TABLE",
    "IMPLICIT_API",
    "S3_BUCKET",
    "SAM_API",
    "SAM_FUNCTION",
    "FunctionSpec",
    "LocalConfigError",
    "Route",
    "Template",
    "TemplateError",
    "UnresolvedReference",
    "find_template",
    "load_template",
    "loads",
]

TEMPLATE_FILE = "template.yaml"
SAM_FUNCTION = "AWS::Serverless::Function"
SAM_API = "AWS::Serverless::Api"
DYNAMODB_TABLE = "AWS::DynamoDB::Table"
S3_BUCKET = "AWS::S3::Bucket"
#: the API SAM creates for ``Type: Api`` events without a RestApiId
IMPLICIT_API = "ServerlessRestApi"


# ----------------------------------------------------------------------------- YAML


def loads(text_: str) -> dict[str, Any]:
    """Parse a CloudFormation YAML document into plain dicts, intrinsics in long form.
    Dates stay text: CloudFormation reads ``AWSTemplateFormatVersion: 2010-09-09`` as a
    string."""
    try:
        document = cfn_yaml.loads(text_)
    except (YAMLError, ValueError) as exc:  # CfnParseError is a YAMLError
        raise TemplateError(f"not a readable template: {' '.join(str(exc).split())}") from exc
    if not isinstance(document, dict):
        raise TemplateError("a template must be a YAML mapping")
    plain = _plain(document)
    assert isinstance(plain, dict)
    return plain


def _plain(value: Any) -> Any:
    """cfn-lint's marked nodes (dict/str/list subclasses) as plain values; GetAtt
    checked for its ``Resource.Attribute`` shape."""
    if isinstance(value, dict):
        plain = {str(k): _plain(v) for k, v in value.items()}
        att = plain.get("Fn::GetAtt") if len(plain) == 1 else None
        if att is not None and not (
            isinstance(att, list) and len(att) == 2 and all(att) and isinstance(att[0], str)
        ):
            raise TemplateError(f"!GetAtt {att!r} is not Resource.Attribute")
        return plain
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return str(value)
    if isinstance(value, dt.date):  # datetime too: YAML timestamps are text to CloudFormation
        return value.isoformat()
    return value


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


def _sam_view(document: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """The document as SAM sees it before translating: the implicit API added, Globals
    merged into every serverless resource (and removed)."""
    view = copy.deepcopy(dict(document))
    try:
        ImplicitRestApiPlugin().on_before_transform_template(view)
        GlobalsPlugin().on_before_transform_template(view)
    except InvalidDocumentException as exc:
        causes = "; ".join(" ".join(str(e.message).split()) for e in exc.causes)
        raise TemplateError(f"{path.name}: {causes or exc.message}") from exc
    return view


class Template:
    """A parsed template. Built complete; accessors return copies, so it cannot drift."""

    __slots__ = ("_doc", "_sam", "path")

    def __init__(self, document: Mapping[str, Any], path: Path) -> None:
        if not isinstance(document.get("Resources"), dict):
            raise TemplateError(f"{path}: no Resources mapping")
        self._doc: dict[str, Any] = copy.deepcopy(dict(document))
        self._sam = _sam_view(self._doc, path)
        self.path = path

    def __repr__(self) -> str:
        return f"Template({str(self.path)!r})"

    def document(self) -> dict[str, Any]:
        """The whole template as written (long-form intrinsics), as a copy."""
        return copy.deepcopy(self._doc)

    # -- parameters ------------------------------------------------------------------

    def _parameters(self) -> dict[str, Any]:
        return dict(self._doc.get("Parameters") or {})

    def parameters_defaults(self) -> dict[str, str]:
        return {
            name: text(spec["Default"], f"Parameters.{name}.Default")
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
            check_parameter(name, declared[name], str(value))
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
        """Properties of a SAM resource (the implicit API included) with its Globals
        section merged in, as SAM merges them."""
        resource = self._sam["Resources"].get(logical_id)
        if not isinstance(resource, dict) or resource.get("Type") != type_:
            raise UnresolvedReference(f"{self.path.name} has no {type_} {logical_id!r}")
        return copy.deepcopy(resource.get("Properties") or {})

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
                auth = (self.api_properties(api).get("Auth") or {}).get("DefaultAuthorizer")
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

    def api_properties(self, api: str) -> dict[str, Any]:
        """An ``AWS::Serverless::Api``'s Properties, Globals merged (LocalConfigError if
        routes name an API that is not one)."""
        try:
            return self.sam_properties(api, SAM_API)
        except UnresolvedReference:
            raise LocalConfigError(
                f"routes name RestApiId {api!r}, which is not an {SAM_API}"
            ) from None

    def routes(self) -> list[Route]:
        return [route for spec in self.functions().values() for route in spec.events]

    def events(self, kind: str) -> list[tuple[str, str, dict[str, Any]]]:
        """(function, event name, Properties unresolved) of every function event of
        ``kind`` (``DynamoDB``, ``Schedule``...), in template order."""
        found = []
        for function in self.resources(SAM_FUNCTION):
            events = self.sam_properties(function, SAM_FUNCTION).get("Events") or {}
            for name, event in events.items():
                if isinstance(event, dict) and event.get("Type") == kind:
                    found.append((function, str(name), dict(event.get("Properties") or {})))
        return found

    # -- intrinsics ------------------------------------------------------------------

    def resolve(
        self,
        value: Any,
        refs: Mapping[str, str] | None = None,
        attrs: Mapping[tuple[str, str], str] | None = None,
        parameters: Mapping[str, str] | None = None,
        pseudo: Mapping[str, str] | None = None,
    ) -> Any:
        """``value`` with every intrinsic replaced (see ``intrinsics.Resolver``);
        ``parameters`` override the defaults and are checked against the constraints."""
        values = self.parameter_values(parameters)
        pseudo = {**DEFAULT_PSEUDO, **(pseudo or {})}
        resolver = Resolver(self._doc, self.path.name, refs, attrs, values, pseudo)
        return resolver.resolve(value)

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
            name: text(value, f"{function_logical_id}.Environment.Variables.{name}")
            for name, value in variables.items()
        }

    # -- DynamoDB and S3 (the boto3 calls are in tokenbroker.local.resources) ---------

    def create_table_kwargs(self, logical_id: str, table_name: str) -> dict[str, Any]:
        """``dynamodb.create_table(**kwargs)`` for the table's Properties. Settings that
        need other calls (TTL, PITR, tags, deletion protection) or exist only in
        CloudFormation are dropped; see ``ttl_attribute`` and ``point_in_time_recovery``."""
        props = self.resolve(self._resource(logical_id, DYNAMODB_TABLE).get("Properties") or {})
        return resources.create_table_kwargs(props, logical_id, table_name)

    def ttl_attribute(self, logical_id: str) -> str | None:
        spec = self._table_property(logical_id, "TimeToLiveSpecification")
        if not truthy(spec.get("Enabled")):
            return None
        return text(spec.get("AttributeName"), f"{logical_id}.TimeToLiveSpecification")

    def point_in_time_recovery(self, logical_id: str) -> bool:
        spec = self._table_property(logical_id, "PointInTimeRecoverySpecification")
        return truthy(spec.get("PointInTimeRecoveryEnabled"))

    def _table_property(self, logical_id: str, name: str) -> dict[str, Any]:
        props = self._resource(logical_id, DYNAMODB_TABLE).get("Properties") or {}
        value = self.resolve(props.get(name) or {})
        assert isinstance(value, dict)
        return value

    def bucket_name(self, logical_id: str, default: str) -> str:
        """The bucket's ``BucketName`` if the template fixes one, else ``default``."""
        props = self._resource(logical_id, S3_BUCKET).get("Properties") or {}
        return text(self.resolve(props.get("BucketName", default)), f"{logical_id}.BucketName")

    def bucket_requests(
        self, logical_id: str, bucket_name: str, region: str
    ) -> list[tuple[str, dict[str, Any]]]:
        """The ``s3`` client calls (method name, kwargs) that build the bucket (see
        ``resources.bucket_requests``)."""
        props = self.resolve(self._resource(logical_id, S3_BUCKET).get("Properties") or {})
        return resources.bucket_requests(props, logical_id, bucket_name, region)
