"""The Lambda host: the template's functions loaded and run in this process.

Each function's handler is imported from its ``CodeUri`` under a module name of its own
(every function's module is called app.py), and invoked one at a time with a Lambda
context object carrying its name, memory and timeout. Differences from Lambda: one
process runs every function (they share ``os.environ`` and module state), and handler
timeouts are reported, not enforced.
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenbroker.local.errors import LocalConfigError
from tokenbroker.local.template import SAM_FUNCTION, Template

DEFAULT_ACCOUNT_ID = "123456789012"
DEFAULT_REGION = "us-east-1"

Event = dict[str, Any]
#: how the gateway and the event sources call a function: (logical id, event) -> result
Invoke = Callable[[str, Event], Any]


def log_to_stderr(text: str) -> None:
    """Where the stack's own lines go (stdout is kept for the export lines)."""
    print(text, file=sys.stderr, flush=True)


@dataclass
class LambdaContext:
    """The part of the Lambda context object handlers and Powertools read."""

    function_name: str
    memory_limit_in_mb: int
    invoked_function_arn: str
    aws_request_id: str
    timeout_seconds: float
    function_version: str = "$LATEST"
    log_group_name: str = ""
    log_stream_name: str = "local"
    identity: Any = None
    client_context: Any = None
    tenant_id: Any = None
    _deadline: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_seconds
        self.log_group_name = self.log_group_name or f"/aws/lambda/{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


Handler = Callable[[Event, Any], Any]


@dataclass(frozen=True)
class LocalFunction:
    logical_id: str
    name: str
    handler: Handler
    memory_mb: int = 128
    timeout_seconds: float = 3.0


def load_handler(code_uri: Path, handler: str, logical_id: str) -> Handler:
    """Import ``handler`` ("app.handler", "pkg/mod.fn"...) from ``code_uri`` under a
    module name unique to the function (every function's module is called app.py)."""
    module_path, dot, attribute = handler.rpartition(".")
    if not dot or not module_path or not attribute:
        raise LocalConfigError(f"{logical_id}: Handler {handler!r} is not module.function")
    file = code_uri / (module_path.replace(".", "/") + ".py")
    if not file.is_file():
        raise LocalConfigError(f"{logical_id}: handler module {file} does not exist")
    name = "_tokenbroker_local_" + re.sub(r"\W", "_", logical_id)
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise LocalConfigError(f"{logical_id}: cannot load {file}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    # Lambda puts the code directory on sys.path (for the function's own modules);
    # Powertools' Logger binds to sys.stdout when created: give it stderr, like the
    # function's logs, and keep stdout for the stack's export lines.
    sys.path.insert(0, str(code_uri))
    try:
        with contextlib.redirect_stdout(sys.stderr):
            spec.loader.exec_module(module)
    except Exception:
        sys.modules.pop(name, None)
        raise
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(str(code_uri))
    function = getattr(module, attribute, None)
    if not callable(function):
        raise LocalConfigError(f"{logical_id}: {file} has no function {attribute!r}")
    return function  # type: ignore[no-any-return]


class FunctionHost:
    """Runs the functions in this process, one invocation at a time: the functions
    share os.environ and module state, and moto's conditional writes are not atomic
    across threads (in AWS each concurrent invocation has its own environment)."""

    def __init__(
        self,
        functions: Mapping[str, LocalFunction],
        *,
        region: str = DEFAULT_REGION,
        account_id: str = DEFAULT_ACCOUNT_ID,
    ) -> None:
        self.functions = dict(functions)
        self.region = region
        self.account_id = account_id
        self._lock = threading.Lock()

    def context(self, function: LocalFunction) -> LambdaContext:
        return LambdaContext(
            function_name=function.name,
            memory_limit_in_mb=function.memory_mb,
            invoked_function_arn=(
                f"arn:aws:lambda:{self.region}:{self.account_id}:function:{function.name}"
            ),
            aws_request_id=str(uuid.uuid4()),
            timeout_seconds=function.timeout_seconds,
        )

    def invoke(self, logical_id: str, event: Event) -> Any:
        function = self.functions[logical_id]
        # (no stdout redirection here: it is process-wide, and invocations run on the
        # server's and the event sources' threads; metrics are disabled locally and
        # Powertools' Logger was bound to stderr when the module was loaded)
        with self._lock:
            context = self.context(function)
            started = time.monotonic()
            try:
                return function.handler(event, context)
            finally:
                took = time.monotonic() - started
                if took > function.timeout_seconds:
                    log_to_stderr(
                        f"{logical_id}: took {took:.1f}s, over its {function.timeout_seconds:g}s"
                        " timeout (Lambda would have stopped it)"
                    )


def functions_from_template(
    template: Template, resolve: Callable[[Any], Any], *, stack_name: str
) -> dict[str, LocalFunction]:
    """Load every function's handler, with its name, memory and timeout (Globals
    merged, as SAM merges them)."""
    loaded: dict[str, LocalFunction] = {}
    for logical_id, spec in template.functions().items():
        props = template.sam_properties(logical_id, SAM_FUNCTION)
        name = resolve(props.get("FunctionName")) or f"{stack_name}-{logical_id}"
        loaded[logical_id] = LocalFunction(
            logical_id=logical_id,
            name=str(name),
            handler=load_handler(spec.code_uri, spec.handler, logical_id),
            memory_mb=int(resolve(props.get("MemorySize", 128))),
            timeout_seconds=float(resolve(props.get("Timeout", 3))),
        )
    return loaded
