"""The local side of the deployment: read template.yaml and build its resources on moto.

template.yaml is the single source of truth for table schemas, TTL attributes,
environment variable names and routes; this package is the only code that reads it.
"""

from tokenbroker.local.template import (
    FunctionSpec,
    Route,
    Template,
    TemplateError,
    UnresolvedReference,
    find_template,
    load_template,
)

__all__ = [
    "FunctionSpec",
    "Route",
    "Template",
    "TemplateError",
    "UnresolvedReference",
    "find_template",
    "load_template",
]
