"""Rendering records as JSON, an aligned text table or CSV (no dependency beyond stdlib).

A record is a mapping of field name to a JSON-ready value. ``Field`` says how each value
is shown in table and CSV output:

One time format everywhere: ISO 8601 UTC with milliseconds (``2024-05-01T12:00:00.000Z``,
:func:`iso_ms`), the admin plane's times (kept in seconds) included. Machine-readable
output adds the epoch in milliseconds, named ``<time>_ms`` (:func:`time_fields`), as the
audit output (``at_ms``, ``first_seen_ms``) and the JSON Lines export do.

- JSON keeps values as they are, except times: a time field ``x`` is the ISO 8601 text
  and ``x_ms`` the Unix epoch in milliseconds (int) next to it; lists stay lists, missing
  values are ``null``. A list command prints a JSON array, any other one JSON object.
- Table and CSV show times as ISO 8601 UTC, lists joined by spaces, missing values as
  empty cells.
- CSV is bound for spreadsheets, which run a cell starting with ``= + - @`` (or a tab or
  carriage return before one) as a formula: every CSV writer goes through
  :func:`csv_writer`, which prefixes such cells with ``'`` (OWASP "CSV injection"), so a
  User-Agent such as ``=HYPERLINK(...)`` planted by a token thief stays inert text.
"""

from __future__ import annotations

import csv
import io
import json
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any, Literal

Format = Literal["json", "table", "csv"]
FORMATS: tuple[Format, ...] = ("json", "table", "csv")
Kind = Literal["text", "int", "time", "list"]
Record = Mapping[str, Any]


@dataclass(frozen=True)
class Field:
    name: str
    kind: Kind = "text"


def iso_ms(at_ms: int) -> str:
    """Epoch ms as ISO 8601 UTC with milliseconds, e.g. ``2026-11-27T04:00:00.123Z``:
    the one time format of every output."""
    moment = datetime.fromtimestamp(at_ms // 1000, tz=UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{at_ms % 1000:03d}Z"


def iso8601(epoch_seconds: int | float) -> str:
    """Epoch seconds (the admin plane's times) in the one format, :func:`iso_ms`."""
    return iso_ms(int(epoch_seconds * 1000))


def time_fields(name: str, epoch_seconds: int | float | None) -> dict[str, Any]:
    """A time for JSON: ``{name: ISO 8601 UTC, name_ms: epoch milliseconds}`` (both None
    when there is no time). For every command's machine-readable output."""
    if epoch_seconds is None:
        return {name: None, f"{name}_ms": None}
    return {name: iso8601(epoch_seconds), f"{name}_ms": int(epoch_seconds * 1000)}


def cell(value: Any, kind: Kind) -> str:
    """One value as table/CSV text."""
    if value is None:
        return ""
    if kind == "time":
        return iso8601(value)
    if kind == "list" and not isinstance(value, str):
        return " ".join(str(v) for v in value)
    return str(value)


def render(records: Iterable[Record], fields: Sequence[Field], fmt: Format, *, many: bool) -> str:
    """The text to print (ends with a newline). ``many``: a list result (JSON array,
    table with a header row) rather than one record (JSON object, field/value table)."""
    rows = list(records)
    if fmt == "json":
        payload: Any = [_json(r, fields) for r in rows] if many else _json(rows[0], fields)
        return json.dumps(payload, indent=2) + "\n"
    if fmt == "csv":
        return to_csv(rows, fields)
    if many:
        return to_table(rows, fields)
    return to_key_value(rows[0], fields)


def _json(record: Record, fields: Sequence[Field]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields:
        if f.kind == "time":
            out.update(time_fields(f.name, record.get(f.name)))
        else:
            out[f.name] = record.get(f.name)
    return out


#: what a spreadsheet takes as the start of a formula (or of a cell it re-parses)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(text: str) -> str:
    """A CSV cell a spreadsheet shows as text: formula starts get a leading ``'``."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


class CsvWriter:
    """``csv.writer`` (RFC 4180, ``\\n`` line ends) whose every cell is neutralised."""

    def __init__(self, out: IO[str]) -> None:
        self._writer = csv.writer(out, lineterminator="\n")

    def writerow(self, cells: Iterable[str]) -> None:
        self._writer.writerow([neutralise(c) for c in cells])


def csv_writer(out: IO[str]) -> CsvWriter:
    """The one way this package writes CSV (see the module docstring)."""
    return CsvWriter(out)


def to_csv(rows: Sequence[Record], fields: Sequence[Field]) -> str:
    """RFC 4180 CSV with a header row (also when there are no rows)."""
    buffer = io.StringIO()
    writer = csv_writer(buffer)
    writer.writerow([f.name for f in fields])
    for row in rows:
        writer.writerow([cell(row.get(f.name), f.kind) for f in fields])
    return buffer.getvalue()


def to_table(rows: Sequence[Record], fields: Sequence[Field]) -> str:
    """Aligned columns under a header row; numbers right-aligned."""
    header = [f.name for f in fields]
    body = [[_printable(cell(row.get(f.name), f.kind)) for f in fields] for row in rows]
    widths = [max([_width(h)] + [_width(line[i]) for line in body]) for i, h in enumerate(header)]
    right = [f.kind == "int" for f in fields]

    def line(values: Sequence[str]) -> str:
        cells = [_pad(v, w, r) for v, w, r in zip(values, widths, right, strict=True)]
        return "  ".join(cells).rstrip()

    out = [line(header), line(["-" * w for w in widths])]
    out.extend(line(values) for values in body)
    if not body:
        out.append("(none)")
    return "\n".join(out) + "\n"


def to_key_value(record: Record, fields: Sequence[Field]) -> str:
    """One record as two aligned columns: field name, value."""
    width = max(_width(f.name) for f in fields)
    lines = [
        f"{_pad(f.name, width, False)}  {_printable(cell(record.get(f.name), f.kind))}".rstrip()
        for f in fields
    ]
    return "\n".join(lines) + "\n"


def _printable(text: str) -> str:
    # Table cells are for terminals: never let stored text move the cursor or inject
    # escape sequences; CSV and JSON keep the data verbatim (they quote/escape it).
    return "".join(c if c.isprintable() else "\ufffd" for c in text)


def _width(text: str) -> int:
    """Terminal columns taken by ``text`` (East Asian wide characters take two)."""
    return sum(
        0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in ("W", "F") else 1
        for c in text
    )


def _pad(text: str, width: int, right: bool) -> str:
    fill = " " * max(0, width - _width(text))
    return fill + text if right else text + fill
