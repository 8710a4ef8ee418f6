"""The authorizer's CPU ratios in instructions (valgrind callgrind), stable on a busy machine.

    .venv/bin/python -m benchmarks.authorizer_callgrind [--small N] [--large M]

``benchmarks/authorizer.py`` times CPU with ``time.process_time``: on a shared machine
under load its best-of-R figures move by 20-50 %. Instruction counts do not. Each loop
runs in two fresh interpreters under ``valgrind --tool=callgrind``, both signing the same
``M`` requests first, one then serving ``N`` of them, the other all ``M``: the difference
of the two totals divided by ``M - N`` is the instructions of one allowed request, with
imports, set-up and signing cancelled out. Ratios are against the two direct P-256
verifies (the ``baseline`` loop), as in benchmarks/authorizer.py. Instructions are not
time (a cache miss costs more than an add), so these ratios complement the timed ones;
they do not replace them. Skips (exit 0) when valgrind is not installed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import authorizer as bench

#: loop -> what it runs (the names of benchmarks/authorizer.py)
LOOPS = ("baseline", "handler_reuse", "handler", "service_reuse", "service")


def child(loop: str, serve: int, sign: int) -> None:
    """Sign ``sign`` requests, serve the first ``serve`` with ``loop``; exit 1 unless
    every one was allowed."""
    with bench.Bench() as b:
        reuse = loop.endswith("_reuse")
        items = b.batch(sign, "cg", reuse_token=reuse)
        warm = b.batch(3, "cgw", reuse_token=reuse)
        if loop == "baseline":
            tally = bench.run_baseline(items[:serve], b.keys)
        elif loop.startswith("handler"):
            bench.run_handler(b.handler, warm)
            tally = bench.run_handler(b.handler, items[:serve])
        else:
            service = b.memory_service()
            bench.run_service(service, warm)
            tally = bench.run_service(service, items[:serve])
    if tally.allowed != serve or tally.denied:
        sys.stderr.write(f"{loop}: {tally.allowed}/{serve} allowed\n")
        raise SystemExit(1)


def _instructions(loop: str, serve: int, sign: int, valgrind: str) -> int:
    cmd = [
        sys.executable, "-m", "benchmarks.authorizer_callgrind",
        "--child", loop, "--serve", str(serve), "--sign", str(sign),
    ]  # fmt: skip
    return _callgrind_total(cmd, valgrind, {**bench.child_env(), "PYTHONHASHSEED": "0"})


def _callgrind_total(cmd: Sequence[str], valgrind: str, env: dict[str, str]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        full = [valgrind, "--tool=callgrind", f"--callgrind-out-file={out}", *cmd]
        proc = subprocess.run(
            full, capture_output=True, text=True, env=env, cwd=bench.ROOT, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{cmd[-1][:40]!r} under callgrind failed:\n{proc.stderr[-2000:]}")
        match = re.search(r"^summary:\s+(\d+)", out.read_text(), re.MULTILINE)
        if match is None:
            raise RuntimeError("no summary line in the callgrind output")
        return int(match.group(1))


#: the cold-init children of benchmarks/authorizer.py, and the prelude alone (the
#: interpreter's start-up and the timing set-up, the same in both: subtracted)
COLD_KINDS = ("prelude", "baseline", "authorizer", "authorizer_no_kms", "authorizer_full_data")


def cold_init(valgrind: str = "valgrind") -> dict[str, Any]:
    """Cold init in instructions: the children ``benchmarks/authorizer.py`` times
    (``import boto3`` + a DynamoDB client vs importing the authorizer +
    ``bootstrap.default()`` + its clients), each minus the prelude's instructions."""
    totals = {}
    for kind in COLD_KINDS:
        env = {**bench.cold_env(kind), "PYTHONHASHSEED": "0"}
        if kind == "prelude":
            code = f"APP = ''\nWITH_KMS = False\nREQUESTS = 0\n{bench._PRELUDE}"
        else:
            code = bench._script(kind)
        totals[kind] = _callgrind_total([sys.executable, "-c", code], valgrind, env)
    net = {k: totals[k] - totals["prelude"] for k in COLD_KINDS if k != "prelude"}
    return {
        "instructions": net,
        "prelude_instructions": totals["prelude"],
        "ratio": round(net["authorizer"] / net["baseline"], 3),
        "ratio_no_kms": round(net["authorizer_no_kms"] / net["baseline"], 3),
        "ratio_full_data": round(net["authorizer_full_data"] / net["baseline"], 3),
    }


def run(small: int, large: int, *, valgrind: str = "valgrind", cold: bool = True) -> dict[str, Any]:
    if shutil.which(valgrind) is None:
        return {"skipped": f"valgrind not found ({valgrind!r} is not on PATH)"}
    per_request = {}
    for loop in LOOPS:
        low = _instructions(loop, small, large, valgrind)
        high = _instructions(loop, large, large, valgrind)
        per_request[loop] = (high - low) / (large - small)
    base = per_request["baseline"]
    report: dict[str, Any] = {
        "requests": [small, large],
        "instructions_per_request": {k: round(v) for k, v in per_request.items()},
        "ratio": {k: round(v / base, 3) for k, v in per_request.items() if k != "baseline"},
    }
    if cold:
        report["cold_init"] = cold_init(valgrind)
    return report


def render(report: dict[str, Any]) -> str:
    if "skipped" in report:
        return f"callgrind benchmark skipped: {report['skipped']}"
    ins, ratio = report["instructions_per_request"], report["ratio"]
    lines = [
        f"instructions per allowed request (callgrind, {report['requests'][1]} - "
        f"{report['requests'][0]} requests): " + ", ".join(f"{k} {v:,}" for k, v in ins.items()),
        "ratio to 2 direct P-256 verifies: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratio.items()),
        f"  targets: handler <= {bench.CPU_TARGET}x, service <= {bench.SERVICE_TARGET}x",
    ]
    cold = report.get("cold_init")
    if cold:
        net = cold["instructions"]
        lines.append(
            f"cold init instructions (prelude {cold['prelude_instructions']:,} subtracted): "
            + ", ".join(f"{k} {v:,}" for k, v in net.items())
            + f"; authorizer / (boto3 + DynamoDB client) {cold['ratio']:.2f}x "
            f"(target <= {bench.COLD_TARGET}x), without the KMS client {cold['ratio_no_kms']:.2f}x"
            f", with botocore's full models (no BOTOCORE_DATA) {cold['ratio_full_data']:.2f}x"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.authorizer_callgrind", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--small", type=int, default=10)
    parser.add_argument("--large", type=int, default=60)
    parser.add_argument("--valgrind", default="valgrind")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--no-cold", action="store_true", help="skip the cold-init counts")
    parser.add_argument("--child", choices=LOOPS, help=argparse.SUPPRESS)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--sign", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.serve, args.sign)
        return 0
    report = run(args.small, args.large, valgrind=args.valgrind, cold=not args.no_cold)
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
