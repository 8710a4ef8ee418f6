"""The local stack's CloudFormation stack: what the admin CLI checks the deployment
parameter against (tokenbroker.cli.deployment.verify_stack).

On AWS the stack's Outputs name its tables, bucket and keys, and only a deployer can
change them; the SSM parameter is only a pointer. Locally nothing deploys the template
(see provision.py), so this publishes a stack of the same name whose Outputs are the
template's own Output definitions, resolved against what was provisioned. Its one
resource is a log group (moto's CloudFormation needs a resource and implements this one
without warnings); it is never written to.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tokenbroker.local.provision import Deployment

#: the outputs the CLI compares (tokenbroker.cli.deployment.STACK_OUTPUTS)
CHECKED_OUTPUTS = (
    "ClientsTableName",
    "DevicesTableName",
    "TokensTableName",
    "UsageTableName",
    "AggregatesTableName",
    "DigestBucketName",
    "DigestKeyArn",
    "SigningKeyArn",
    "DeploymentParameterName",
)


def publish_stack(deployment: Deployment, cloudformation: Any) -> None:
    outputs = deployment.template.document().get("Outputs") or {}
    values = {
        name: str(deployment.resolve(outputs[name]["Value"]))
        for name in CHECKED_OUTPUTS
        if name in outputs
    }
    body = {
        "Resources": {
            "LocalMarker": {
                "Type": "AWS::Logs::LogGroup",
                "Properties": {"LogGroupName": f"/tokenbroker/{deployment.stack_name}/local"},
            }
        },
        "Outputs": {name: {"Value": value} for name, value in values.items()},
    }
    cloudformation.create_stack(StackName=deployment.stack_name, TemplateBody=json.dumps(body))
