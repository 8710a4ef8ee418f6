"""CloudFormation intrinsics, resolved against values the caller supplies.

Physical ids from the local provisioner, parameter values, pseudo parameters: nothing is
guessed, and a missing value is an ``UnresolvedReference`` (a ``KeyError``) naming it.
Also the scalar helpers CloudFormation's string forms need (``text``, ``truthy``) and the
parameter constraint check.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping
from typing import Any

from tokenbroker.local.errors import TemplateError, UnresolvedReference

#: pseudo parameters that have one value wherever the stack runs (in the aws partition)
DEFAULT_PSEUDO: Mapping[str, str] = {"AWS::Partition": "aws", "AWS::URLSuffix": "amazonaws.com"}


def intrinsic_name(value: Mapping[str, Any]) -> str | None:
    if len(value) != 1:
        return None
    (key,) = value
    return key if key in ("Ref", "Condition") or key.startswith("Fn::") else None


def without(mapping: Mapping[str, Any], keys: frozenset[str] | set[str]) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if k not in keys}


def truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


def text(value: Any, where: str) -> str:
    """CloudFormation's string form of a scalar (booleans as ``true``/``false``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise TemplateError(f"{where}: expected a string, got {value!r}")


def check_parameter(name: str, spec: Mapping[str, Any], value: str) -> None:
    def fail(why: str) -> TemplateError:
        return TemplateError(f"parameter {name}={value!r}: {why}")

    allowed = spec.get("AllowedValues")
    if allowed is not None and value not in [text(v, name) for v in allowed]:
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


class Resolver:
    """Resolves the intrinsics of one template ``document`` (named ``where`` in
    messages): Ref to a parameter -> ``parameters``, to a resource -> ``refs[id]``, to
    a pseudo parameter -> ``pseudo``; Fn::GetAtt -> ``attrs[(id, attr)]``; Sub, Join,
    Select, Split, If (with the document's Conditions), Equals/Not/And/Or, FindInMap,
    Base64. Keys whose value is ``AWS::NoValue`` disappear."""

    def __init__(
        self,
        document: Mapping[str, Any],
        where: str,
        refs: Mapping[str, str] | None,
        attrs: Mapping[tuple[str, str], str] | None,
        parameters: Mapping[str, str],
        pseudo: Mapping[str, str] | None,
    ) -> None:
        self._doc = document
        self._where = where
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
            name = intrinsic_name(value)
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
        return text(self.resolve(value), "intrinsic argument")

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
            template, variables = arg, {}
        else:
            template, raw = arg
            variables = {k: self._str(v) for k, v in raw.items()}

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):  # ${!Literal} is the text ${Literal}
                return "${" + name[1:] + "}"
            if name in variables:
                return variables[name]
            if "." in name and not name.startswith("AWS::"):
                return self._get_att(name.split(".", 1))
            return text(self._ref(name), f"${{{name}}}")

        return _SUB_VARIABLE.sub(replace, template)

    def _list(self, value: Any) -> list[Any]:
        result = self.resolve(value)
        if not isinstance(result, list):
            raise TemplateError(f"expected a list, got {value!r}")
        return result

    def _join(self, arg: Any) -> str:
        delimiter, items = arg
        return str(delimiter).join(text(item, "Fn::Join item") for item in self._list(items))

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
