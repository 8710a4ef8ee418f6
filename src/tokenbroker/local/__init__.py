"""The local side of the deployment: template.yaml emulated on moto, split by what it
emulates.

- ``template`` — the SAM model: template.yaml read once (cfn-lint's loader), the
  implicit API and Globals applied by the SAM translator's own plugins;
  ``intrinsics`` resolves CloudFormation intrinsics, ``resources`` turns table and
  bucket Properties into boto3 calls, ``provision`` creates them on moto.
- ``gateway`` — API Gateway: router, proxy and authorizer events, Lambda authorizers
  and policy evaluation, gateway responses, the WSGI application.
- ``lambda_host`` — Lambda: the functions' handlers loaded and invoked in this process.
- ``sources`` — event sources: DynamoDB stream mappings and schedules.
- ``moto_server`` and ``stack`` — moto on a loopback port, and the whole local stack.

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
