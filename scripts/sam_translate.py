"""Print a SAM template as CloudFormation receives it (aws-sam-translator, no AWS call).

Usage: python scripts/sam_translate.py template.yaml > build/template.cfn.json
Code URIs become placeholder S3 URIs (the translator wants them; `sam build` would upload).
checkov scans this output (scripts/test): the SAM-generated roles, stages and permissions
are what gets deployed, so that is what the policy checks must see.

The translator drops a SAM resource's Metadata, where the template writes its checkov
skips (each with the reason). They are copied back onto what the resource became: a
function's AWS::Lambda::Function (same logical id), an API's RestApi and Stage.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from samtranslator.translator.transform import transform

from tokenbroker.local.template import load_template


class _NoManagedPolicies:
    """The templates name no AWS managed policy by name: nothing to look up."""

    def load(self) -> dict[str, str]:
        return {}


def main(path: str) -> None:
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    document = load_template(Path(path)).document()
    for resource in document["Resources"].values():
        for key in ("CodeUri", "ContentUri"):
            if isinstance(resource.get("Properties", {}).get(key), str):
                resource["Properties"][key] = f"s3://bucket/{resource['Properties'][key]}.zip"
    skips = {
        logical_id: resource["Metadata"]["checkov"]
        for logical_id, resource in document["Resources"].items()
        if resource["Type"].startswith("AWS::Serverless::")
        and "checkov" in (resource.get("Metadata") or {})
    }
    output = transform(document, {}, _NoManagedPolicies())
    for logical_id, resource in output["Resources"].items():
        for source, checkov in skips.items():
            if _made_from(logical_id, resource["Type"], source):
                resource.setdefault("Metadata", {})["checkov"] = checkov
    json.dump(output, sys.stdout, indent=1)


def _made_from(logical_id: str, type_: str, source: str) -> bool:
    if type_ == "AWS::Lambda::Function":
        return logical_id == source
    if type_ in ("AWS::ApiGateway::RestApi", "AWS::ApiGateway::Stage"):
        return logical_id == source or (logical_id.startswith(source) and type_.endswith("Stage"))
    return False


if __name__ == "__main__":
    main(sys.argv[1])
