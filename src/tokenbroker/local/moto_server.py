"""moto as a server on a loopback socket we bound ourselves (so a port in use is a
one-line error, not werkzeug's several lines and a sys.exit), without access logs."""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Iterable
from typing import Any

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from moto.server import ThreadedMotoServer
from werkzeug.serving import get_sockaddr, make_server, select_address_family


class LocalStackError(Exception):
    """The local stack cannot start (one-line message for the user)."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listen(host: str, port: int) -> socket.socket:
    """A listening socket (so errors are ours to report, in one line, before werkzeug
    would print several and call sys.exit)."""
    try:
        family = select_address_family(host, port)
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise LocalStackError(f"cannot listen on {netloc(host, port)}: {_why(exc)}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(get_sockaddr(host, port, family))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise LocalStackError(f"cannot listen on {netloc(host, port)}: {_why(exc)}") from exc
    return sock


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


class _OneRequestAtATime:
    """moto's WSGI app, serving one request at a time.

    moto is not safe under concurrent requests: ``TransactWriteItems`` deep-copies each
    table it touches and, when the transaction is cancelled, puts the copies back, so a
    write another thread made in between is lost while its stream record has already
    been read (seen: the archive index held a usage record the usage table no longer
    had), and its conditional writes are check-then-act. In AWS, DynamoDB serialises
    those itself. The local stack's callers (the functions, their event sources, the
    admin CLI and tests) therefore see moto one request at a time.

    One lock for the whole process, not one per server: moto's backends are global to
    the process, so a transaction cancelled through one server puts back the copies of
    the tables it touched under the writes a second server's client made to them."""

    _LOCK = threading.Lock()

    def __init__(self, app: Any) -> None:
        self._app = app
        self._lock = _OneRequestAtATime._LOCK

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        with self._lock:
            # the whole answer is produced under the lock (moto builds it eagerly)
            return list(self._app(environ, start_response))


class _QuietMotoHandler(MotoRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None


class MotoServer(ThreadedMotoServer):
    """ThreadedMotoServer on a socket we bound, without access logs, and reporting a
    startup failure instead of leaving ``start`` waiting forever."""

    def __init__(self, sock: socket.socket) -> None:
        host, port = sock.getsockname()[:2]
        super().__init__(ip_address=host, port=port, verbose=False)
        self._socket = sock
        self.error: BaseException | None = None

    def _server_entry(self) -> None:
        try:
            self._server = make_server(
                self._ip_address,
                self._port,
                _OneRequestAtATime(DomainDispatcherApplication(create_backend_app)),
                True,
                request_handler=_QuietMotoHandler,
                fd=self._socket.fileno(),
            )
        except BaseException as exc:  # noqa: BLE001 - reported by start()
            self.error = exc
            self._server_ready_event.set()
            return
        finally:
            self._socket.close()  # make_server duplicated it
        self._server_ready_event.set()
        self._server.serve_forever()

    def start(self) -> None:
        super().start()
        if self.error is not None:
            raise LocalStackError(f"moto server failed to start: {self.error}") from self.error

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join()
