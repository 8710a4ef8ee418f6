"""The local stack: moto on a loopback port, template.yaml's resources provisioned into
it, and the API Gateway emulation serving the template's routes.

    with LocalStack("127.0.0.1", port=0) as stack:
        requests.get(stack.api_url + "/.well-known/jwks.json")
        subprocess.run(["tokenbroker", "clients", "list"], env={**os.environ, **stack.exports})

All functions run in this process, so ``start`` sets ``os.environ`` to the union of
their environments (plus the moto endpoint and test credentials); ``stop`` restores it.
One LocalStack per process at a time.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import boto3
from werkzeug.serving import BaseWSGIServer, make_server

from tokenbroker.local.gateway import LocalApi, RequestHandler, routes_from_template
from tokenbroker.local.lambda_host import (
    DEFAULT_ACCOUNT_ID,
    FunctionHost,
    functions_from_template,
    log_to_stderr,
)
from tokenbroker.local.moto_server import (
    LocalStackError,
    MotoServer,
    is_loopback,
    listen,
    netloc,
)
from tokenbroker.local.provision import Deployment, provision
from tokenbroker.local.sources import DEFAULT_SCHEDULE_SECONDS, EventSources
from tokenbroker.local.template import Template, TemplateError, load_template

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "DEFAULT_STACK",
    "LocalStack",
    "LocalStackError",
    "is_loopback",
    "union_environment",
    "wait_for_signal",
    "warn",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8787
DEFAULT_STACK = "tokenbroker-local"
REGION = "us-east-1"
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
#: settings from the caller's shell that would point boto3 somewhere else
_CLEARED = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")


#: Template parameters the local stack overrides so a newcomer sees the whole system
#: work within minutes: ledger digests sealed every minute, a minute after it ends.
LOCAL_PARAMETERS: dict[str, str] = {"DigestPeriodSeconds": "60", "DigestGraceSeconds": "60"}


class LocalStack:
    """moto + provisioning + the local API, as a context manager."""

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = 0,
        *,
        stack_name: str = DEFAULT_STACK,
        template: Path | str | None = None,
        moto_port: int = 0,
        region: str = REGION,
        log: Callable[[str], None] | None = None,
        schedule_interval: float = DEFAULT_SCHEDULE_SECONDS,
        parameters: Mapping[str, str] | None = None,
        trust_forwarded_for: bool = False,
    ) -> None:
        """``log`` receives one line per request (default: stderr). Scheduled functions
        run every ``schedule_interval`` seconds at most (their template rate if shorter);
        stream-triggered ones get their table's new records about twice a second.
        ``parameters`` override the template's parameters (on top of LOCAL_PARAMETERS)."""
        self.parameters = {**LOCAL_PARAMETERS, **(parameters or {})}
        self.host = host
        self.port = port
        self.stack_name = stack_name
        self.template_path = Path(template) if template is not None else None
        self.moto_port = moto_port
        self.region = region
        self._log = log
        self.schedule_interval = schedule_interval
        #: the local API takes the client address from X-Forwarded-For (dev flag)
        self.trust_forwarded_for = trust_forwarded_for
        self._events: EventSources | None = None
        self.template: Template | None = None
        self.deployment: Deployment | None = None
        #: the union of the functions' environments (what os.environ gets, besides AWS_*)
        self.function_environment: dict[str, str] = {}
        self.api_url = ""
        self.moto_url = ""
        self.exports: dict[str, str] = {}
        self._moto: MotoServer | None = None
        self._api: BaseWSGIServer | None = None
        self._api_thread: threading.Thread | None = None
        self._saved_environ: dict[str, str] | None = None

    # ---- context manager --------------------------------------------------------------
    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---- lifecycle --------------------------------------------------------------------
    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        template = self._load_template()
        api_socket = listen(self.host, self.port)
        self.port = api_socket.getsockname()[1]
        self.api_url = f"http://{netloc(self.host, self.port)}"
        try:
            moto_socket = listen(DEFAULT_HOST, self.moto_port)
        except LocalStackError:
            api_socket.close()
            raise
        self.moto_port = moto_socket.getsockname()[1]
        self.moto_url = f"http://{netloc(DEFAULT_HOST, self.moto_port)}"
        self._moto = MotoServer(moto_socket)
        try:
            self._moto.start()
            deployment = self._provision(template)
            account_id = deployment.account_id or DEFAULT_ACCOUNT_ID
            self._set_environment(deployment, template)
            people = self._provision_people(deployment)
            routes = routes_from_template(template, deployment.resolve, stack_name=self.stack_name)
            functions = functions_from_template(
                template, deployment.resolve, stack_name=self.stack_name
            )
        except BaseException:
            api_socket.close()
            raise
        host = FunctionHost(functions, region=self.region, account_id=account_id)
        try:
            events = EventSources(
                template,
                deployment,
                host.invoke,
                streams_client=self._client("dynamodbstreams"),
                schedule_interval=self.schedule_interval,
                log=self._log or log_to_stderr,
            )
        except (TemplateError, ValueError) as exc:
            api_socket.close()
            raise LocalStackError(f"cannot emulate the event sources: {_one_line(exc)}") from exc
        self._events = events
        app = LocalApi(
            routes,
            host.invoke,
            domain_name=netloc(self.host, self.port),
            account_id=account_id,
            log=self._log or log_to_stderr,
            trust_forwarded_for=self.trust_forwarded_for,
        )
        try:
            self._api = make_server(
                self.host,
                self.port,
                app,
                threaded=True,
                request_handler=RequestHandler,
                fd=api_socket.fileno(),
            )
        finally:
            api_socket.close()  # make_server duplicated it
        self._api_thread = threading.Thread(
            target=self._api.serve_forever, name="tokenbroker-local-api", daemon=True
        )
        self._api_thread.start()
        events.start()
        self.exports = {
            "AWS_ENDPOINT_URL": self.moto_url,
            **FAKE_CREDENTIALS,
            "AWS_DEFAULT_REGION": self.region,
            "TOKENBROKER_STACK": self.stack_name,
            "TOKENBROKER_ISSUER": self.api_url,
            **people,
        }

    def stop(self) -> None:
        """Stop the event sources, both servers, and restore os.environ. Safe to call
        twice."""
        events, self._events = self._events, None
        if events is not None:
            events.stop()
        api, self._api = self._api, None
        if api is not None:
            api.shutdown()
            api.server_close()
        if self._api_thread is not None:
            self._api_thread.join(timeout=10)
            self._api_thread = None
        moto, self._moto = self._moto, None
        if moto is not None:
            if moto._server is not None:
                moto.stop()
            moto._socket.close()  # not started: the socket is still ours
        if self._saved_environ is not None:
            os.environ.clear()
            os.environ.update(self._saved_environ)
            self._saved_environ = None
        _forget_composition_root()

    # ---- steps ------------------------------------------------------------------------
    def _load_template(self) -> Template:
        try:
            template = load_template(self.template_path)
        except FileNotFoundError as exc:
            where = self.template_path or "the working directory or the package's checkout"
            raise LocalStackError(f"template not found: {where}") from exc
        except (TemplateError, OSError, ValueError) as exc:
            raise LocalStackError(f"cannot read template: {_one_line(exc)}") from exc
        self.template = template
        return template

    def drain(self) -> None:
        """Deliver every record now in the template's streams to its functions (and
        their retries) before returning; tests call it instead of waiting for a poll."""
        if self._events is None:
            raise LocalStackError("the local stack is not running")
        self._events.drain()

    def _client(self, service: str) -> Any:
        """A client of the stack's moto server."""
        return boto3.Session(
            aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=self.region,
        ).client(service, endpoint_url=self.moto_url)

    def _provision(self, template: Template) -> Deployment:
        session = boto3.Session(
            aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=self.region,
        )
        clients = {
            service: session.client(service, endpoint_url=self.moto_url)
            for service in ("dynamodb", "kms", "ssm")
        }
        try:
            self.deployment = provision(
                template,
                session_or_clients=clients,
                stack_name=self.stack_name,
                region=self.region,
                parameters=self.parameters,
            )
        except (TemplateError, ValueError) as exc:
            raise LocalStackError(f"cannot provision the stack: {_one_line(exc)}") from exc
        return self.deployment

    def _provision_people(self, deployment: Deployment) -> dict[str, str]:
        """A local user pool trusted for token exchange (see local/cognito.py)."""
        if "IdpsTable" not in deployment.refs:
            return {}
        from tokenbroker.local.cognito import provision_people

        return provision_people(
            self._client,
            moto_url=self.moto_url,
            region=self.region,
            idps_table=deployment.refs["IdpsTable"],
            clock=time.time,
        )

    def _set_environment(self, deployment: Deployment, template: Template) -> None:
        self.function_environment = union_environment(
            {fid: deployment.environment(fid) for fid in template.functions()}
        )
        # the authorizers' BOTOCORE_DATA names the layer's cut botocore data; here the
        # functions run on the installed package and its botocore (no layer build):
        # botocore's full models, without a warning that the layer lacks the cut
        self.function_environment.pop("BOTOCORE_DATA", None)
        self._saved_environ = dict(os.environ)
        for name in _CLEARED:
            os.environ.pop(name, None)
        os.environ.update(self.function_environment)
        os.environ.update(
            {
                "AWS_ENDPOINT_URL": self.moto_url,
                **FAKE_CREDENTIALS,
                "AWS_DEFAULT_REGION": self.region,
                "AWS_REGION": self.region,
                "POWERTOOLS_TRACE_DISABLED": "1",
                # no CloudWatch here; EMF lines printed from the stream/schedule threads
                # would also interleave with whatever the process prints on stdout
                "POWERTOOLS_METRICS_DISABLED": "true",
            }
        )
        os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "TokenBroker")
        _forget_composition_root()

    # ---- output -----------------------------------------------------------------------
    def export_lines(self) -> list[str]:
        lines = [f"export {name}={shlex.quote(value)}" for name, value in self.exports.items()]
        return [*lines, f"Local API: {self.api_url}"]


def union_environment(environments: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """One environment for every function (they share a process), or LocalStackError
    naming the variable two functions disagree on."""
    union: dict[str, str] = {}
    owner: dict[str, str] = {}
    for function, environment in environments.items():
        for name, value in environment.items():
            if name in union and union[name] != value:
                raise LocalStackError(
                    f"environment variable {name} is {union[name]!r} in {owner[name]} but "
                    f"{value!r} in {function}; the local stack runs all functions in one "
                    "process, so they must agree"
                )
            union[name] = value
            owner.setdefault(name, function)
    return union


def _forget_composition_root() -> None:
    """The functions' cached container was built from the previous environment."""
    from tokenbroker import bootstrap

    bootstrap.default.cache_clear()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def wait_for_signal(signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> int:
    """Block until one of ``signals`` arrives (main thread only); returns its number."""
    received: list[int] = []
    done = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        done.set()

    previous: dict[int, Any] = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        while not done.wait(0.5):
            pass
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    return received[0]


def warn(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr, flush=True)
