"""CloudFormation resource Properties as the boto3 calls that build them locally.

Tables and buckets: the Properties (intrinsics already resolved) become
``create_table`` / ``create_bucket`` arguments and one call per configuration. Settings
with no local meaning are dropped by name; any other unknown property is a
TemplateError rather than a silent gap.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tokenbroker.local.errors import TemplateError
from tokenbroker.local.intrinsics import truthy, without


def create_table_kwargs(
    props: Mapping[str, Any], logical_id: str, table_name: str
) -> dict[str, Any]:
    """``dynamodb.create_table(**kwargs)`` for a table's resolved Properties. Settings
    that need other calls (TTL, PITR) or exist only in CloudFormation are dropped."""
    kwargs: dict[str, Any] = {"TableName": table_name}
    for key, value in props.items():
        if key in _TABLE_PASSED:
            kwargs[key] = value
        elif key == "GlobalSecondaryIndexes":
            kwargs[key] = [without(index, _GSI_DROPPED) for index in value]
        elif key == "StreamSpecification":
            kwargs[key] = {"StreamEnabled": True, "StreamViewType": value["StreamViewType"]}
        elif key == "SSESpecification":
            sse = {"Enabled": truthy(value.get("SSEEnabled"))}
            sse.update(without(value, {"SSEEnabled"}))
            kwargs[key] = sse
        elif key not in _TABLE_DROPPED:
            raise TemplateError(f"{logical_id}: no local mapping for table property {key!r}")
    return kwargs


def bucket_requests(
    props: Mapping[str, Any], logical_id: str, bucket_name: str, region: str
) -> list[tuple[str, dict[str, Any]]]:
    """The ``s3`` client calls (method name, kwargs) that build the bucket from its
    resolved Properties: ``create_bucket`` first, then one call per configuration.
    Settings with no local meaning (tags, logging, lifecycle, notifications) are
    dropped; any other unknown property is a TemplateError rather than a silent gap."""
    create: dict[str, Any] = {"Bucket": bucket_name}
    if region != "us-east-1":  # us-east-1 rejects an explicit LocationConstraint
        create["CreateBucketConfiguration"] = {"LocationConstraint": region}
    if truthy(props.get("ObjectLockEnabled")):
        create["ObjectLockEnabledForBucket"] = True
    requests: list[tuple[str, dict[str, Any]]] = [("create_bucket", create)]
    bucket = {"Bucket": bucket_name}
    for key, value in props.items():
        if key == "VersioningConfiguration":
            requests.append(("put_bucket_versioning", {**bucket, "VersioningConfiguration": value}))
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
            config = {k: truthy(v) for k, v in value.items()}
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
            retention = value.get("Rule", {}).get("DefaultRetention", {})
            for unit in ("Days", "Years"):  # a parameter resolves to a string
                if unit in retention:
                    retention[unit] = int(retention[unit])
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
