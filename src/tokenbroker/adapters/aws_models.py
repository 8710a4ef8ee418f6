"""The authorizer's botocore data: the installed botocore's models, cut to what it calls.

Creating a botocore client parses the service's whole model (DynamoDB's ``service-2.json``
is ~0.9 MB of JSON, KMS's ~0.6 MB) and the 1.25 MB ``endpoints.json``, and lists every
service directory botocore ships (~420) to check the name is known: most of the
authorizer's cold init after the imports (benchmarks/authorizer_callgrind.py). The
authorizer's adapters call ten operations of four services, so the layer build
(src/Makefile) writes a data directory with

- each service of :data:`EDGE_OPERATIONS`: ``service-2.json`` holding only those operations (plus
  the endpoint-discovery operation botocore looks for) and exactly the shapes they reach,
  copied unchanged; ``endpoint-rule-set-1.json`` unchanged;
- ``endpoints.json`` with only the services of :data:`EDGE_SERVICES`; ``partitions.json``,
  ``_retry.json`` and ``sdk-default-configuration.json`` unchanged;
- ``manifest.json``: the botocore version it was cut from and the operations it holds.

Nothing is written by hand: :func:`generate` derives every file from the botocore it runs
with (the layer's own), and :func:`edge_loader` uses the directory only when its manifest
names the running botocore and :data:`EDGE_OPERATIONS`, else returns None (full models).
The data directory is read through botocore's own ``Loader`` (its only search path), by
the authorizer functions' clients of :data:`EDGE_SERVICES` only (bootstrap.edge_clients);
every other client and every other function uses botocore's full data.

    python -m tokenbroker.adapters.aws_models DIR   # what the layer build runs
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import botocore
from botocore.loaders import Loader

#: service -> the operations the authorizer functions call (tests/unit/test_aws_models.py
#: derives them from the code on the authorizer's path and checks this is exactly that)
EDGE_OPERATIONS: Mapping[str, tuple[str, ...]] = {
    # Query: the quota gate's rules read when the liveness read did not bring them
    # (adapters/quota_rules.py; every request's until `quotas migrate` marked the table)
    "dynamodb": ("BatchGetItem", "GetItem", "PutItem", "Query", "TransactWriteItems", "UpdateItem"),
    "kms": ("GetPublicKey", "Sign"),
    "ssm": ("GetParameter", "PutParameter"),  # the key set (KEY_SET_PARAMETER)
    "secretsmanager": ("GetSecretValue",),  # DPoP nonces (DPOP_NONCE_REQUIRED)
}
EDGE_SERVICES = tuple(EDGE_OPERATIONS)
#: where the layer build puts it (next to the package, on Lambda /opt/python/...)
DEFAULT_DIR = Path(__file__).resolve().parent.parent / "_botocore_data"
MANIFEST = "manifest.json"
_COPIED = ("partitions", "_retry", "sdk-default-configuration")


def _shape_refs(shape: Mapping[str, Any]) -> Iterable[str]:
    for member in shape.get("members", {}).values():
        yield member["shape"]
    for key in ("member", "key", "value"):
        if key in shape:
            yield shape[key]["shape"]


def trim_service_model(model: Mapping[str, Any], operations: Iterable[str]) -> dict[str, Any]:
    """``model`` with only ``operations`` (and its endpoint-discovery operation, which
    botocore's client set-up looks up) and the shapes they reach; all else unchanged."""
    ops = model["operations"]
    keep = set(operations) | {n for n, op in ops.items() if op.get("endpointoperation")}
    missing = keep - set(ops)
    if missing:
        raise ValueError(f"not in the model: {sorted(missing)}")
    shapes = model["shapes"]
    todo = []
    for name in keep:
        op = ops[name]
        todo += [op[k]["shape"] for k in ("input", "output") if k in op]
        todo += [e["shape"] for e in op.get("errors", ())]
    reached: set[str] = set()
    while todo:
        name = todo.pop()
        if name not in reached:
            reached.add(name)
            todo.extend(_shape_refs(shapes[name]))
    trimmed = dict(model)
    trimmed["operations"] = {n: ops[n] for n in sorted(keep)}
    trimmed["shapes"] = {n: shapes[n] for n in sorted(reached)}
    return trimmed


def trim_endpoints(endpoints: Mapping[str, Any], services: Iterable[str]) -> dict[str, Any]:
    """``endpoints.json`` with only ``services`` in each partition."""
    wanted = set(services)
    trimmed = dict(endpoints)
    trimmed["partitions"] = [
        {**p, "services": {k: v for k, v in p["services"].items() if k in wanted}}
        for p in endpoints["partitions"]
    ]
    return trimmed


def _write(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, separators=(",", ":")), encoding="utf-8")


def generate(
    target: Path, operations: Mapping[str, Sequence[str]] = EDGE_OPERATIONS
) -> dict[str, Any]:
    """Write the data directory into ``target`` from the running botocore's data."""
    loader = Loader()  # botocore's own search path (the installed data)
    for name in _COPIED:
        _write(target / f"{name}.json", loader.load_data(name))
    _write(target / "endpoints.json", trim_endpoints(loader.load_data("endpoints"), operations))
    for service, ops in operations.items():
        version = loader.determine_latest_version(service, "service-2")
        model = loader.load_service_model(service, "service-2", version)
        _write(target / service / version / "service-2.json", trim_service_model(model, ops))
        rules = loader.load_service_model(service, "endpoint-rule-set-1", version)
        _write(target / service / version / "endpoint-rule-set-1.json", rules)
    manifest = {
        "botocore": botocore.__version__,
        "operations": {k: list(v) for k, v in operations.items()},
    }
    _write(target / MANIFEST, manifest)
    return manifest


def edge_loader(directory: Path | None = None) -> Loader | None:
    """A botocore Loader reading only the data directory, if it was cut from the running
    botocore; None otherwise (absent or stale: the caller uses the full models)."""
    return edge_data(directory)[0]


def edge_data(directory: Path | None = None) -> tuple[Loader | None, str]:
    """(:func:`edge_loader`'s answer, why it is None: "" when the data is used). The
    reason is for an operator: the full models still work, only a fifth slower to load,
    so a layer built without the cut (or from another botocore) must say so, once."""
    directory = directory or DEFAULT_DIR
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except OSError:
        return None, "absent"
    except ValueError:
        return None, "unreadable manifest"
    if not isinstance(manifest, dict):
        return None, "unreadable manifest"
    if manifest.get("botocore") != botocore.__version__:
        return None, f"cut from botocore {manifest.get('botocore')}, running {botocore.__version__}"
    # cut for other operations (an older build's list): a client without one the code
    # calls raises AttributeError (not a ClientError, so not failing closed as such);
    # the full models instead (review: Query was missing from the cut this way)
    if manifest.get("operations") != {k: list(v) for k, v in EDGE_OPERATIONS.items()}:
        return None, "cut for other operations"
    loader = Loader(extra_search_paths=[os.fspath(directory)], include_default_search_paths=False)
    return loader, ""


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        sys.stderr.write("usage: python -m tokenbroker.adapters.aws_models DIR\n")
        return 2
    manifest = generate(Path(args[0]))
    sys.stdout.write(
        f"botocore {manifest['botocore']} data for {', '.join(manifest['operations'])}: {args[0]}\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
