"""``audit export``'s file side: a temporary file renamed into place when complete, JSON
Lines or CSV rows (CSV through the one formula-neutralising writer), and a progress bar
through the range's time on stderr."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import IO

import click

from tokenbroker.cli.audit_render import USAGE_FIELDS, usage_row
from tokenbroker.cli.errors import CommandFailed
from tokenbroker.cli.output import cell, csv_writer
from tokenbroker.domain.models import UsageRecord

FILE_FORMATS = ("jsonl", "csv")


@contextmanager
def destination(target: str) -> Iterator[IO[str]]:
    """Standard output, or a temporary file beside ``target`` renamed onto it when the
    export is complete (removed if it fails)."""
    if target == "-":
        yield sys.stdout
        return
    directory = os.path.dirname(os.path.abspath(target))
    try:
        fd, partial = tempfile.mkstemp(
            dir=directory, prefix=f".{os.path.basename(target)}.", suffix=".part"
        )
    except OSError as exc:
        raise CommandFailed(f"cannot write {target}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            yield out
        os.replace(partial, target)
    except BaseException:
        os.unlink(partial)
        raise


def write(
    records: Iterable[UsageRecord], out: IO[str], file_format: str, start: int, end: int
) -> int:
    """Write the records; returns how many. Progress (through the range) on stderr."""
    writer = csv_writer(out) if file_format == "csv" else None
    if writer is not None:
        writer.writerow([f.name for f in USAGE_FIELDS])
    count, done, total = 0, 0, end - start
    with click.progressbar(
        length=total,
        label="exporting",
        file=sys.stderr,
        show_percent=True,
        item_show_func=_records_written,
    ) as bar:
        for record in records:
            row = usage_row(record)
            if writer is not None:
                writer.writerow([cell(row.get(f.name), f.kind) for f in USAGE_FIELDS])
            else:
                out.write(json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n")
            count += 1
            position = record.at_ms - start
            bar.update(position - done, count)
            done = position
        bar.update(total - done, count)
    return count


@contextmanager
def reading_progress(start: int, end: int) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr through [start, end) for a newest-first read: the
    callback takes each record's ``at_ms``. Click hides the bar when stderr is not a
    terminal, so scripts and captured output see nothing of it."""
    total, done = max(1, end - start), 0
    quiet = not sys.stderr.isatty()
    with click.progressbar(length=total, label="reading", file=sys.stderr, hidden=quiet) as bar:

        def advance(at_ms: int) -> None:
            nonlocal done
            position = min(total, max(done, end - at_ms))
            bar.update(position - done)
            done = position

        yield advance
        bar.update(total - done)


def _records_written(count: int | None) -> str | None:
    return None if count is None else f"{count} records"
