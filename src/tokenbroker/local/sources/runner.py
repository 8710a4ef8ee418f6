"""The event sources of the template, run together: every stream mapping polled and
every schedule ticked in daemon threads, invoking the functions in this process.

    sources = EventSources(template, deployment, host.invoke, schedule_interval=60)
    sources.start()
    ...
    sources.drain()  # tests: deliver everything in the streams now
    sources.stop()
"""

from __future__ import annotations

import datetime as dt
import functools
import threading
from collections.abc import Callable
from typing import Any

from tokenbroker.local.lambda_host import Invoke, log_to_stderr
from tokenbroker.local.provision import Deployment
from tokenbroker.local.sources.schedules import (
    DEFAULT_SCHEDULE_SECONDS,
    Schedule,
    scheduled_event,
    schedules,
)
from tokenbroker.local.sources.streams import (
    Log,
    StreamPoller,
    make_streams_client,
    stream_mappings,
)
from tokenbroker.local.template import Template

POLL_SECONDS = 0.5
#: drain() gives up after this many rounds (a function that feeds its own stream)
_MAX_DRAIN_ROUNDS = 1000


class EventSources:
    """Every stream mapping and schedule of the template, started and stopped together."""

    def __init__(
        self,
        template: Template,
        deployment: Deployment,
        invoke: Invoke,
        *,
        streams_client: Any = None,
        schedule_interval: float = DEFAULT_SCHEDULE_SECONDS,
        poll_interval: float = POLL_SECONDS,
        log: Log = log_to_stderr,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        """``streams_client``: a ``dynamodbstreams`` client on the deployment's endpoint
        (default: one from the standard configuration chain). LocalConfigError if the
        template asks for something that cannot be emulated."""
        if schedule_interval <= 0 or poll_interval <= 0:
            raise ValueError("intervals must be positive")
        client = streams_client or make_streams_client(deployment.region)
        self._invoke = invoke
        self._log = log
        self._now = now
        self._poll_interval = poll_interval
        self.pollers = [
            StreamPoller(m, client, invoke, deployment.region, log)
            for m in stream_mappings(template, deployment)
        ]
        self.schedules = schedules(template, deployment, cap=schedule_interval)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Fix the streams' starting positions, then poll and tick in daemon threads."""
        if self._threads:
            return
        self._stop.clear()
        for poller in self.pollers:
            with poller.lock:
                poller.prime()
        targets: list[tuple[str, Callable[[], None]]] = [
            (f"stream {p.mapping.name}", functools.partial(self._poll_forever, p))
            for p in self.pollers
        ]
        targets += [
            (f"schedule {s.name}", functools.partial(self._tick_forever, s)) for s in self.schedules
        ]
        for name, target in targets:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop the threads (an invocation in progress finishes first). Safe twice."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        self._threads = []

    def drain(self) -> None:
        """Deliver every record now in the streams, retries included, before returning."""
        for poller in self.pollers:
            with poller.lock:
                for _ in range(_MAX_DRAIN_ROUNDS):
                    if poller.poll() == 0:
                        break

    def run_schedules(self) -> None:
        """Run every scheduled function once, now (what a tick does)."""
        for schedule in self.schedules:
            self._run(schedule)

    # ---- threads ----------------------------------------------------------------------
    def _poll_forever(self, poller: StreamPoller) -> None:
        reported = ""
        while not self._stop.wait(self._poll_interval):
            try:
                with poller.lock:
                    poller.poll()
                reported = ""
            except Exception as exc:  # noqa: BLE001 - the stack keeps running; say it once
                message = f"{poller.mapping.name}: polling failed: {type(exc).__name__}: {exc}"
                if message != reported:
                    self._log(message)
                    reported = message

    def _tick_forever(self, schedule: Schedule) -> None:
        while not self._stop.wait(schedule.interval):
            self._run(schedule)

    def _run(self, schedule: Schedule) -> None:
        try:
            self._invoke(schedule.function, scheduled_event(schedule, self._now()))
        except Exception as exc:  # noqa: BLE001 - logged; the next tick runs anyway
            self._log(f"{schedule.name}: the function failed: {type(exc).__name__}: {exc}")
